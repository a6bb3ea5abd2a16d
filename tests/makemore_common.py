"""What the files of Karpathy's makemore lectures (tests/test_programs_makemore_*.py) share: ``build_dataset``, the
character contexts and targets the MLP-based parts train on."""

def build_dataset(m, words, block_size=3):
    torch = m.torch
    chars = sorted(list(set(''.join(words))))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi['.'] = 0
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + '.':
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    X = torch.tensor(X)
    Y = torch.tensor(Y)
    return X, Y
