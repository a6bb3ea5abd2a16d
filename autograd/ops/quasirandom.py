"""torch.quasirandom.SobolEngine: scrambled or plain Sobol' sequences, the points PyTorch's engine draws (same
direction numbers, same scrambling from the same generator, same rounding), for quasi-Monte Carlo (BoTorch's
initial designs and qMC samplers, integration over the unit cube).

A Sobol' point's coordinate d is the XOR of direction numbers v[d, l] (30-bit integers) over the bits l of its
index in Gray-code order: point i+1 is point i XOR v[d, (lowest zero bit of i)], divided by 2^30. The direction
numbers of a dimension follow from a primitive polynomial of degree m over GF(2) and m initial odd numbers by
Bratley and Fox's recurrence (Algorithm 659, p. 90)

    v[j] = v[j-m] / 2^m  XOR  XOR_{k=1..m} a_k v[j-k]      (in 30-bit fixed point; a_m = 1)

Scrambling (Owen's, as PyTorch does it): a random lower-unitriangular bit matrix M per dimension multiplies
each direction number's bits (most significant first) over GF(2), and a random 30-bit shift starts the XOR
chain; both come from ``randint(2, ...)`` on the generator seeded with ``seed`` (the default one without).

The direction numbers are S. Joe and F. Y. Kuo's (new-joe-kuo-6.21201, search criterion D(6), as PyTorch's and
SciPy's), of which the first ``TABLE_DIMENSIONS`` dimensions are kept below, bit-packed: for each dimension after
the first, its degree m (5 bits), the polynomial's m-1 inner coefficients, then the i-bit value (v_i - 1) / 2
of each initial number v_i (odd and below 2^(i+1)), i = 0..m-1, most significant bit first.
"""

import base64

import numpy

from .. import backend
from ..factories import randint
from ..random import Generator
from ..tensor import Tensor
from .conversion import type_name

MAXBIT = 30
MAXDIM = 21201  # PyTorch's table
TABLE_DIMENSIONS = 1111  # chainrule's (above, a ValueError says so)
_RECIPROCAL = 1.0 / 2 ** MAXBIT

_PACKED = """
CLGwcCEkk2KSUFRIiu7JbQAugqXsvMGw8GaPSjQm3BpjmI1p2YbKU+OD7Z8zifMeI45xxfORoDGjnTJHU6cW+POqrNHjuYiaI77wJAPB0yXTymY5
Q9O1gbPVy3SD5QlqI+6VwGPw2HvT9uN5g/1Q7QQOn8zHpBXf+vsEFpVLN8Qml2sYRC9+i0FkMecfAnQygkoOZDRSVHTkOPQhZcRDpck6NEb159jU
VCFfhwRhBurlhGfuEJI0c4t/7qR6KWrUJIRlyF63ekNtEGwQiSIBRMsFVpFosOez+UjIqofaLaSxVHYc7VJevNlAd+k079NMRuSbg2ffeUpO1vO2
MUEnx2XTVwCUMWtffJJKU6o3E9ClRSg1AFBSpPWOD72pV8EqDKBUrZ3mG/+aV6gv2LT9LOSCfX7sloTt6XmQS2qxrq36peggMNorEvh4c5BiCYmU
60Z1dMVA7X/4wmPx32lWYTIogFz4lJmCi4OGT0zopl0jOCaere+ModNbouGTpymwYu3yPRTalWLRsSptnzLC84k3PKGPG8Cb+eZprAdOEAEJJF6n
HnepwbxTtMy2qDrp3KSiXhrk8daNTOyieUxUDeE5PN/nELzUnqYTcilsT2XS0tw+J8cbqD+70+iSiWdNif2vpIPUlQEnISXFvcqga0U3/6G81BON
B1/GyVqCxyXD4Wp7UMvpMIhBLgob5T0MpP1JRAR/45VnxSiK40wS/wVFGKOkYCc/iKNfAvjbqQ/Uc1Q9S7ZdOo83J4lgLhFR/bdz6/QdSkNJhIzj
UwFIzb75HBNVKSJP8+rW0TUmOG5DO4bCpPB0bRZreJShUjKztOIylX21rQiBclLXi+QxkuOqYRsXua3ZOUx6lUqZVOSplovvJDxzhTQ0BZxeslKn
H2WDptDJlPKsqfnoKzKffcL6QoH4U/TlmVnPUwqEmcG8u5iRUKkB3QrcQKolNU/tO3aVRtmP8rBjBKkPywyaj4kVJ0m4/D2iwqWl7+4voPFU8Itw
F8YBap+fmxGTbL1USM0s/cRMqrVObIS1ABVYBsRAW72cq0t7jGg1WtVvwsSpR91ir9Wvk1d/oVYs9hnA/zmqx3BPXnbz6VkCwqJJOZcrOXEDvTx/
RWjKZIPkl0qtN2CbfllJlaoQGbYotmq1k98dhr4lVsV+Un+v1crfVTZ6Wx+pXG2T2sZGACuTLrKmk16Vdi2R8764Kq9rlT9FRPPV+Xnov5l20r+B
mEdjmWdYBX7jh6cCE6lgX6K66h28RjWCq5o25LJqXJYLLKgyHkxazFhHAHoda92JtWGL0QE3axs0dYZG6EdcXbCDFhx3lPCN0vcFWHtixWzPAEB1
YjRjkOwNecLFiUVoOOcre2uWJ9+OC/ou9/dYqQMTbBoi8CFiw4IziiHo2xWM7mY92HHGGtY0M2dWE2KNwljgS2n3vdY61WOZ5uldrXeHtY6i6zaX
CjG2lj1+QmpALaruWQ3CVj5J0v5VZE3YAIb1q4P1kkBchN0NwNKWShPuZEzcU9hZO9Fsgn20+/Fk8wEVxu0xcxWUTLLVh0ZFMJZScoy0ZrG1AFlQ
Uzu8kUTv9WVuPcGEKdxgNZc1cq8a/1O/Vl1+gikY94JYWX+z8QXcuxG9ZgjxX++QliGFmOPYysZKkslWavzzKlEFyJ9Zre2bJZFQNY1m5/Lasu4M
OzWccPMKmgpfGJZ2NaWhlyVHS1nlFgoMApG2GWfcSn4TZtbitaAGLruqNpQ/loGAs+IqkrUpWhPqIyDFCi2JaFQVXkIccVQlooyjOsSe6ztWkkiq
cz+Uyz5aYN7tjeWCq+VpsjNFjO+lalWnkwQ6jzhdhhaftkWBheLy7lqFBUb0BiC5rWpCgyvpnLUbFanXBI28UVNglqmaHsemt5AYWqoefxpPWMjt
asqrVtARo0iFq0kgcvtivclWtQ9fqYjF2pta3raTwq/2UkFrpFqSN5NHbDWu6Ld++sMT2Ra8Xs1hpheVeVr7vdUWu/fR+WwOtBIJ/DLTFbCPO/gQ
Fv35VsQ+Jz5mmJz7WzLksLq/nN+JbPqU3zehCtXFtAkidWM/fraW0pMsBZKtsF1bWEMupdImgEltePjJv1N2YYW2RkObLv6Y/pbb2d8Rn6dW+Vt9
+b7K9wqUpW4f2Cjzvq3Uxbi00yUiHqDIVuSIoIAQKpELW5SMmIK3ryL9br7MSqT6YmNlu3AWUoDClN7W7x88dtcdc/hbycaSCRRF4ZFvbP6yQXlI
kNW9zyngUrmnZ9b55nuQPLv/uFvtoalg+MwEqXAvNmk3f+5nhcDGhmS4Iee0FwZZPSidSEhHXB7HwJpnU9T9cVgkZ1TYq711xgFIWoRhr3rXGsyU
taKwwThcconjmERnOE1yE1FVy3xEV6XIm9e9vvgPTtcl+QMW4flTz1yaspRDAcPmLXJw/0GpxDWBxcs46NHQQISuFy/N6Wo6GBH+XMb3i5mI/eTd
czK4k4fKdc3VzTVRf1HeDFdXNRuPwEsOGWBc4peWXOxbr+lzoKizucyCLsXPaq136TMFnVdAtArXlV9IbF0OKKvoOVK7eXR2STQUYRLZVdJtmB3f
CQj8l0tCi6rQuhAYXUGsrEBpyV99dRxOIpoHKmCF1UAUIFRvYDvXVgaRmVpagDJdYpwBnEr5WZl1vfcqrjvD1tXXEZ73bSDbHldkuxpHZA6rQV2f
IH6xBJGohXahK0AOSaDgJduobbahmtKuV29rkV79S0NfXci9Au+15s3Nd12iOWbOGk9V3bUpMqHFyIVXeBD2/jKNrx5d51hB9ISKrTV31s82upMM
XaXgS3owDNaW8NeHMBK1duH2NV4h5gtERR17ZXifv1G0Bv8PpeKvhA/ooP0wV4zUWkLH3OfDXjjp+7H8hy6leRryJrInbqEF5L4EWXD41H4XlWda
SmnasTteX5u/ZF9ynq15xRkYIOTYD7XnvcwFmC08PlefVKE5d5hBX16AfWtbODz9uXpJdWZkq6eLRenhmYfzDY31l6iVMHHO7DE5XrtgzMPLlmgx
ez8nLWYBobFl7cydLSiQ9JuXvKhj0UZLLI1e+Obs5MweF2l8KjmdT+TymXXxjJ+JM8krQtfMcXnSY7mvm182Vq5zHuFvHX1wq3bhe/ztpfan7m4R
Y33RV9tCAZ3fyCHxX3QD1WEKfmY9fgg7iwd48j81+QSRZQYpqUxX5cJ8TewCNP1fm26vjkupUQl+mcn8k3CVCoX63I9WwuTPMxftYqmNcK6wuF/N
5MORLxXx7X9OpRKm8/2hhf5c4fZSXCKUl/pmSroSGU3DYClse+UI7L7pzxgNIBvnVvpgLgumA9vuGsHcbysQFYD609ZU9nIzn2JgTFX6oJQ9DO4/
GBodrBe0/8EKDAYHXc79bBa25mW5gg3d5arKAjPR92CPNeTW1g6na9KYJHFimiWNiPFElgnYSAlWzv+igzGCnjd3q9/XXB+AYKvauMiP8wyE5Ngs
B+SGkk4Gku4WC1WaPN89hazM+YMKq1L/b3mReJRg2bO15kQzAgtv2DsD63wQx2JqEsYO+Rjw2jZJUZgNhBrCiPomBWv9dWEbt3nD1ZoIlEFYR49U
Q7x+kFPnZhMxMdtPE4AjrcGE5IL8onjlgelZYT8GhLVLyAefQJhXDRh2ifuKyS1GFgW85AP5DyrulYWX2ISJpU8qBJRhh3Uif1s6GXqRGGOv9gSE
QCxtfxYZA00JK6Y/XtbRhnHzPreTMBfGsWGf2L3BKSYgcAVYaYfq6j1Mkksf5huBhAiuYS1+q6WHMpaE2NMN2o8rYdHY8ezfeqMyZRh1N991eW92
mn6mIDD/v3XCXBvoHYhjAp8rHxeGv1FiGwju7OJm8rut2InKVRKUFleJlvYi7GTKImMj7hkdiM85qYUFALm9b2I6km27DKY5yZJYlMizwPB32M9G
liVi4NryJYnRMnWJpSrheP+Iv1+RYoeWdD8mu5K2ZtijuOCRR0IuiQn2Kmmgi8K2AfkIXYsnOZN0ZY+KxIti4tlW9mgF4ma2GLrwuQyWle6Q6TYu
4QFsQO2HtzPFi9Yr6yRq62NouGMEo1D7AjfviEyYyNCnitntmcZD5jKj7IHolgWJLTWMsaJKXJ8RUWyCY1IIvhfI5rlXNFjXhTsil/IYB1s2OK3W
Y5+DAgxjeY4ynftVXEPwYZ1joTjLzbWepvgvmOilY+qgaSe+dWY7q5RbeQF+FCq5jxLayRYvupO/mGPW01lWBHj0pXZY9nViUCk/uBa2tj3yd8L+
w1NFBPWPgvTl6jRt4+o6ZCtT5uhp/JzZMBkLqtNrG0+p+uUGRIsRnwvd0M3GnZEt+EUtc1HNOxFkXDu8korrXaz0mR398zqaIk88L+ZI1tkGDF1S
FauBkmuyykxbiYfdC2SgmloqJad8n5OZLK61ZyaHjOyJ1kvYbAedLoAC0b2TFwOux1zCl6yoZNiL+Mb439AKV5k3kJ02PD0qe5WmTksKE37Vxa2n
9ZOf0Cd5RrbartVk8y2m3P0xxnWv2UNKq7J0bZroh9ZRXn2UOco7rkONlGUPDkp73rvMWGU0pSWtBlfa/61ZUXwGvO3QJ1f/xlaFAesZuJKX9fmV
w68bDvzk+WgaZXphLgb7ix5C75lhcaluI8bjKla2WJrgrLrjL91d2ZY9S542qt5Bi8Vlq4+wej9IPuNrmXIVIUl6gDkp8yZdNdrfZ7lnk6etl36s
6gPd+X0NSmXg23xbkeZ0+7zZen8u5KBfxspjpmAlfOmMVn4ylOmYIUk16z/H9c27ZgtL7CHC1L0PkdmE6ZPxdbHpQThWYmIZzkV/MSGRDZkOdRtf
+kCL1i9mT76MJes1CDApmZS9ORTvIJ2eoWZl1OIc8kol/qItmYlyxNNv2B8B2GZk5PdRSyg+sspZmcircimPx4t29meS6n1fVBIZ2rGaDGB7mFzU
BboBZpHlXL0CNo64NpmoWVIqgTgBzpm2aoCo57KSSofqUZq1jQC8niwAquFmuuCPJbYA3UAGGbCpkLYpUpeihEZsQY1RIbrxT5HNnCm6WQVqtMdG
jWcMywVDJ0IpZwEZxc15tgeu/R37JnIn05Qna2wU3h2coSm1I9oWqvKLZzPoDN0dnJke/dnOaxCRiEyoejdGdHK6tdCQVM0SYZ3GyiTAOIp5rFln
iGHHCQYDxAckWeNlD6yCEpTUPdZ5OacAhU81KTYtnuNUcbxfnBXusWfMIMM0eKwt2jtZ90JV1wcTUDBjpn3tRDYE4DzdzZWfkk53AcgmIh8zaAaJ
SU5eK+qdO+qk0BPg4rEDs4Ze08tloDQObSTqfFhkQ79rQKdiM1S2hDqmNPz2gZXby83unrzGvHiNA3kKGxExzpVSwS1aCKocFSZXj092Zv20EaDz
rDagcPbAhPBoJ6hH0e96QySIEhTQUtfvgrwDDBBRWY2grlwHI2VzrS1aquNBdyNQnaciUUg6wTaC8Ygm8nnqYnuw/W0GFT0ug7VfSPASyloMl9/J
44OdPNBnS7QcIrY96tde8O/8pWg8oE2hVEhgdc2kqtCGTvVTX/ws8Ii9ZaEVQipdo68tl8ERU0JTBqEx5Jh/m3+JdoS/9GKwtbOQWDKSTQnQeyuc
Q4+67RBDmhQ4IbivvjlSP7XVNCzFiiS+UkLjxPSpaFrjZS+ZdTVjYb8Y0LxmOjWkb38YOQ1doYlX9ozPUMgw+RxbQy+oMInCC4AUUcO2hnfHp6QD
I6WTsrdNDfZ9MWwXbnZFQixaHABhC+GBOkt6jCQ0OOQpH9tcT3wOVO1oc3KV0sgRwY9vExzQ7yOsdPhT2cZp3omh4l4rw50olZ18cltD4hWPb0o9
Mo8ThiaH6G7POoY820b6e40QwURkQ6xYF/9VQZoiX+mwekFRdtQWZ7RG+TBGJor8VCVlRGiPYfIVGqI0Ke2bqtEhPh1KCJqe1fT8iaJaRRVF7stO
NrelO0S73ub3egkJc+H9ZonhMnbU2X0UFe2YDRP4ujILJprfLXv6GiiJSsPFwKhZraBOtFL0P/TAwy3hWAMVaKaL4zOrmQn3VaYQ0VlqRr1YU80y
Ru8hor6B4bWG1vtfHmF7RZgw8IzAehclt1xmi7rQqUw//2RIVEmNF7hY6ntpZkikFUlaL73XbZXew1UkHho0YJXdFaWLLrOyIH9oyZKQdA0IADJG
/6jRlaOERGGfe0go3iWjRxKktYrlYUrQHWNGqHbNZP3mNPL926aNYa25bg4Hu+gDdM0bdI9C7GrpOZwuhto3FUaz+3GGpPoUVbRvtgmZ1oMEPuE8
fmjhs+IwdRMCkAfyYNHGXdo6p3POYbIUeaOVSieAyIUgMuN180dGFVAsNAty0s4Hto6jMK+NkLBMCRI3bR2MuLnvdKAIQzyiGjt2gQK86/eqfkDe
NHd8tJNuGZOa7zoiaPhz1iEXaSqFqB3I0fbnZKJH76Guiv2do/jQjrjyD3Tu8OAbSBRisRTC/OyD29WGkEympMW1NaioCgxNIPvHnkIOsfqTgBea
QkUu+YjpUHsshcW0hR/rAeKRQudYJoFpDybPoaMZIGFVU/7SKPR2KPOlXPDlkyWkVl9x6zrScWHmIbtIw1vGUSpUMCtq8caRtNUW04ShoPpbuq0j
+1CX09paSh/kS1pIIf+mQelIVmXcDLSTc6lXfm3F9xnlHWknKRdFkBZaQk/8xNJaRWPGO4tDhLf88aS/EnqZ2HcfShLD00mDWU78L82vkWbqhpMc
rfRftGfPq8jbLSZfOGLRKIzaWR8dGk4+4FPD6hZo/tTItKE/YUMc6flAcvsfaUX4iStyTfVViiJM0o4qrtNpXJyAlz4xpSHqPWK/lDjOnkzTSll/
o+4x7WqFDaRWlODRpFiOHm03frDtKp9vIwQYcD5YAibaVVncLCmeGlcRYXQ0rEsDHBn+7BNsM3BpXFbHuvzWyXFBC+zSu9iTtprdG31wfG2lhzaH
ud5DHU/NiPNLF9BfrQPWZEt3cyaWVVpfgOcY/9tOuA0syl8eT3SHjB9MKBpZ5SXrADP5x2L+ULS1/AhXE6rtYRktUGlvTTa/iHVKfdQxYtLiaP6C
PdjFH3+2PaXOMki0QMz7jSsNc0uu7VDdDTCFZMUihpertmKkt0SCSqmIbTAW8aOWcQmEqU29WmBJtjGm4gYsEF/itMIO8hoPmuGF5VAaaYtBVMKS
rmklhYj00x+WKHXSuV26rm5VpkoiYszZjiB54JOjTKeUrZH1xTNrgXB2mWbCx3aKm9jqW3ftM0XPcGdqTdBp6yhaZ37XD7dfrHHaTvy0z3XQFF8F
f44Dl25pocDLrrLU1zr1t7jTSWoqkemZtvgGwOWmmf570O7U+4B0nctNYa7kvYqron78lRaa2LiWQCSD2/o4Jw017rj818Vhx05Ek5psOcDFwFh5
RjsscbTdZT4G+yezOwzPyWm9LV/no58zaeMp1tOJVFo638k9q+UXaacobRNpk9Cko9+rs0525Oeem3YvGYvdtp04nKxI3ffKT/fALTqxFQQwLCGn
fcGWmnXD1m35y5BepMH8NO10t0xrHv/GQ9MuadyVwlXgRrbj7Jnw07ws/LNrnQBaEyORp4Jp7oe4RF8Y3pvzTyP8RdS+7NhC4TLWnoDN8bhZR0EP
6O0tPcNB+sjL8B9XVAzafGxf2MCsjAMmhcm0+VgAVJoitFcmuMtp96p+EeBiytEZXpLT93l0LnSDTqaHEImn8G6skJKIu5I4Y8tQDqewJSYFfF7C
pyagZckp30DGIf/6MY1A/P9hyK3oJNW+4hqCL4sAtAx5UaLvRTUGMo1ADEJHVKkEh2oO17fDIuqAH16+7NQeKsgNIeBO/djXuahFM9fr5CiMHizS
E1DMbNakJU+XDFwcVqHWFyqEM9BUy3VE7UQm846UB7uu7atxmoq0Mz9dGTJtYr4yNRWR7c/wVTyFHxPjai/fGJx7AdLOo2My1GZfA+yLwCHGlN7h
qNWLpU5lDEAEBKWjUbyNrxZA9U7NVQlGo4i9Nq/u1hCNAdBtR06FxKHcHDtVogkaj7qu6qjXl2Rko9+1IRwrbgtFdku16MRqQ+/VnEhbQL4h0zrU
iDxf0TOkxMqYwR2pGqFevutLDDM8HgNSVoE7W7c9vzTw+9ak06/N4qJuessHYc1J/KihBg3zJKpkq5qUDvZuHNhuBuax7rUpbhKwlvVzaBjO6GpV
DTaz4W0TTzk18tS7jNwCac36BmBCTal9OQQDlKNjyslqu1MAeAosXrytHOZXlqZNKSc+0SeQhSGOrUzx86A7LwOxso8n2prxBjoULllrwVGhNTb5
SRO7j8yOrJGYam8PBIdR/u6Jth0a1OGbWqFVWbqyMOYpqdc0I97o5xj8geY7U+ej/gTMorCAvvaWp9YC2qAobXzN1CttUBqrplsRBj2rZBaaoPsB
/+1cqLplP6C1Q7LxbGcy3VzkO9BqiCbR4GQbCJWdhvbVGfXvgkGxKHFQx/2qNQCaLTIPGmzEipNUmJgaSb8IkWCsXPapoMJb8fENjv6MDu1Td+dA
yLPXlb3xfFqnD+f/gHxhE2KP9jVPXkx45JB3zpawF2qfXMWMGLScQpZ1utVSGt1az6Ee3ovFXaqo2wxrY12+q+Xpy1Vj0wGlx4FOWeAiFqsWQNAB
D5OohBlwTVa/JgRC1MdrgTAO2q21tIDX/fUHpMdVtV1Y5J6djisuMhvkarzAT939M1uj9VUi1YBohe3xf4EN+lB9qxS4ErBC7nbBxXLzVkYb/6p/
8ID6go3GrJV6w9BuQji3ZBQtWX6VIYLGyq82hg8as3MihgcPDd0yrTM1aFjzLwVpyYXTPP5q0lfbMy6ItNpIdjrVtjuTHsqFIfR1UTmrfkA0jIYI
6evyontXCAGg2NGIF64cuoauXYKOykP0m2K8iU1c0N7g4TnNLUaW9tq628QqQSkdjGrdl7V2VdOl1z0lZ9WYJWr2dhuMjMgUyHWDpNXylqQNg7VK
L/La2av9ZCMHcsVBOzCjU1gezg7srHZF3RjmhrCGhq9Y1da8NkUzrWFSmfiIJWBgLCN0msLVfHULl/2kuCcItYfuiGPrI7wnPOMRaxBLpxW2sme7
qMNc1iZZot/5vvcLTiiVrHAshsJNOHqXe+97WRUqxOI/lKLfexq2sjdcmpsaQVptOdNNZKDxH0EavQ/XWW9ayjZK9CdfUhpGR+m1lfAikAcp1YhZ
hh5rLxzi6sopIO5HCejWYnCUIuafDLeh5l2s0CNUg0UYzEZ2uYtZruxQR309vlBVu8azhWE7KuS6dz1erm1nMycWvlH9BZZDUBrOqiFH8CqU1tgR
xzWhv+Xn3XwhBPIM2WtGWVn0230K2/tXAtaUTGhvXDS/5Y57ba0uIWGB14fevP4UU1pslqGl28FoFk3SVrTrHsXCf83/9O5ebWoj3W0AgpSFQeNw
2tW2wKhIlYb+cWwltaz77rCfG4UURHxCa11azTKxqJJ4JJSC1sR/lycnXd29/RQ9rY5kHprM+31JeQArW0yilBQE2lID66dWtqu3IIKCPkCAnWct
ba+wjAMT7FRNvLQa3ijR+FEJoim4pf01viVmyNpRRkrlrZZrfx0z9SEAChKIs77XAyFeU54tYsY9xEmuE9u6dmL2TY8MYsNcKS4mBDrsBSLuKia4
pRRN9BGFz1hecE1ySlZlQ95Apf3GqRrk7is4+4qeJ4Fp7rXLZBVnCwuvNLaty2uXFgUIP8O478B7ONcwJeekHtdAtGwdya5q5P/YOfBjkmmw+10f
/I+lqrJHl+jcxrpAXEX4jOx6hjiN7XS3/JG6jrG0SzcQWunQEmcZLM/pyhMstdVhjONzfCqChtDWa6zNxmVwH8V6vJrQ11w82SiE31TOmY+Vrt+O
2jSOF9LxHKy7XfSAnE4DlzBpjHUmu/HX423MteoKxPvteC6LvWKXtDbFpMga8JhsMe3lY1MwFPw14ghiZ5Avt/sFJBZrxexObVN1STHh0dbXnwD8
J0gow7n20xWvQXAjNG3mpoG07Vtel3zTl0Mrct/8Wea9Mwb64HtA8JSDIc16wekFjgk/ue39gpr15kQvgK7mI+kiRTXss7S/ofJHVz+0WGvaVEmf
xyrG188ONtfKcqmDtAwGBbT8ea+k6jkf6N1NxAoVw19fhsvTljT8lukI5r7A9GEN4wJutOfELX528k12nzEQyWi5mv3L2hH3Q5MdOYRNtfzLTtTT
2vuZjDLVa/tY8AvyBOL7rpeo1/qA7lUHUUmNvW6Br//o0MdXeFojoP7TYAy/TnW7S9/NtCKWwFM4O7/MjjsoubBtgM3Tk8dSAVbBgFabAvh1rTC8
5jbUD6a2CQ5fKc7qtmKcmohsE/pZhNeIv8sPdhTYM+i4t1RMZCzPjCmweY5vOwUa6Pwj95tg/IqkMF+a89Y2aybCRBQ5t0BSwjuEmw2FDEVrNZW4
v0AFi5sLSAy2JPPrmJprxzYX0vGFgxtjdeteiGwwAR3DphSp+mXh4thpFOmpo3H16PA7vbDZT7ugNt5Y5hLcY2HIawgU+2f8T4BgRsO6JXgexOHC
8HfabYgp2hd26WusH1n4WxD4SPLmm3CstDoAtiaUfC1HYv37hkUObFH5ND1hdNw0LpE42KZBbfqsJts8O745sV97UAz7MkJtryrDYsaWwUPYsfYN
x97mxcQnUSMhSGEQXDvNi94fJeq+1KuxqatbGjpkYYwizLHFsZs2NS14G2i4V7htsqRsbeOf3iUGZWBgvGbY4oC5idzb1VvuHN2xyaqoyS7uNYju
cBtjtvLVuaqD60sO3vbHg+qsU4/KPr4tSW2PWhFLV+Js8/SzZdsex7w8ePrXjPOkGbY+RPPGOrGHIdfArGx/8W6+XR2tQ2VrmtkEbR060/41DKRp
hbIOq0rEiU7u60OIM2Q7Mut/29y/qHaDZsiYelvQUWhcXtjsrZHBdhjXGeQUrnYEmyS5NI9jEMzkfBVctkpLtOqqNgp/DhDSbJZmxGVBXNQerzSW
2TIdLI7chDu4UTV9soDqWI2qmiuVkS1TZSW6qkQkVmEdqdvmymXfpIOldpE9dVTtlPim1G9gbf/+TGKbKoyv0Tz/GTluu0e2VtRsL3Hc3X9xk/5s
rvOS/3jKyPHv2tjZYXPlwPwdBNrA6z2y1yX3vcSFz67RKAtltGODVkhLmBOHkZbLnL8i9cMshnKFB62YO6W6my0R6e4sCxsxR4pR9jEIvnPWAbZl
27ZrF8X3PwefY2zUXCcXEh6N7BE1ltmuxy94o4TL6X8CTbN0ZKcdVq4FvsinY2cswsPnk7WHxXjaVs5ogU2d/PVbHlv1bZ1YGhs9kADPdaoVGzuS
pyncXhWUhyb3NngZXCG1ySCraPjHbPHDNYcApgTLBQ8y2ep0nM15SGgBGLJNs+P9Q6t/70oHNF1rZ8ukD9Js4kXF9Esmz95yKBh4ry+VsLstn9QV
SjiKINwoJSfbQJQ6MkW7sGYWNRu2g0kd3sSUw+J6229tCcMru1PETo0knjDaIJbO186YGF5cgzG0TD9JXK6bYJnjKqNov92atB/A9tmgD3bRo6Oq
EN3m+3v0GK2jsB5XdHt9UpmWpBtHtZlCaIvrmshLyjaQ0ZxrxtBkWNLOa20ktZTJ40JLyI01tNpMLMAgbn/r44rA1bSlqUf2EFimTMnhw2l5pTLL
dAZe1x5B1tMhZfcMMpODlXH7TabchqPNP3pI3OpgW05t86LXnrcuXbXutp8BWFkrYsFnMeD8bUNg0iXYFIv6Zggy2o/4sZ+muAiE+s8ZtSUgBMxP
zB0mNoNzamN6JJkyvmbXkrzm1NkfsxTpMXh4UedNqiItXls+Voj8yhubVPTFiN8LjeLUcCa2q4eOhQgey3eExaNtWwGm7TPPx53oclbauYvwrSGJ
hPCOg/G1fvL8r85STA+hwLNrO9tpEGT391LBZXbWgpw8A5w3mtXKRg2tyRsYtaEyKpf+lBtcw6JeoAYrSWJavra6r3TeWlc89Wyw8212CDIMS4gY
xiAE6NrxXcxDdD6EeGVOEbXpDvDxMWM1aJ21Q2vcBzQqQvH7HAdpFtgFYgeHikK/T+OzLbBU4bQnNTMBwMJiW2HhTi3JG9pRe6z0NsScU0mISNvi
6UvAbYu+o5cwHmTHKVlW2x2nZXlJkpQ1s4RltkmNYcsm0534a63zbKGlSrESqngYeism2W5OGJQhk+qdSY0ts5wTzBqfBmbqIEzbZ1r9RGRHyynx
La+20iBxHNv/sNjy7YFtpt8YtbtYO6sGCcjbTpp8K3UcIhSLKbW2rORvpbxpBFjkRZttljxPpIARSzXKi6bbTzK6+rQ5P8tMcM22qoqlnq/Fg6+x
a5tuJZAN54CAnaoxw7bd4NTX+Qats/x1LW3Be0gVQv0DjrvcUtuHqd6mob6PoAYvKbca+bYN5wJ+pOPVE25Du9s0/cGYxrsY9tyxenvwVDPefAw8
bbnH5HcU2ImZGMHwW3QOsdpFsB2LtH4VtujZsXORwG3b+cw8bdSLAE49pSYoAXM627gTeVcYId9Z77att3fbj1EToYxs4nmzbxY+Cv2TsA0eP2PW
3lH5N8Ob6xuF4d9tvMYGKmsx38ALlkxbejgDzPZxpDGchs42+IqaMeXDzDwFcght84bn0jFIl0XcNGLb6Gmavj3tI76QkUG317289QVBBiKT+dtv
uWoK7F16+wzR9pbfgDGqtpIQadNqSm2/lOP8A1yLLtvWbZuAN7qVbptYKwabgzcAkHdcCtLIrfsA1G4F9tTmvO9QPbGRaNwONwWZrTyqkDH4sbgm
ABstN+ogwanFM3Bnz7Uzv6vNIihx1uEoYEiEICMkS4HgzcLOFczHJmxrshrBG4aAVUZCsPzLk8zFNw4N3+5d0wxxNHZEbiidze43t5TmSGJ43Fg+
xT61ElcNK8B5uLu0iAJ5kYWIzxUzcZLpqJY4G+EkHbEm4z4WZ9syyhnvsa4NxwTEjVfDKlA9oixbjyn1RATQJnPt9/Q3HzeMBR0HA6Uc5D9uQBut
NnqH7xn9B77cg4b52h8JAYWe6Zm5C4TOs9SUjdgHmqtyJIJg/hBy+13q+zbkxdpple0HE2QH7S3Kea89EqW6JdjWTRuWaUoxpldoXAxSHTcttgz3
pUkrS99mh25gr9YiAQqzCKkcyNzCEsY2gDZZPYC47bmWEnbAPm4T8nD2K3NCOgFZTJoVtV8rpuafxvB91zynUiWLDc1m9hrikrZtlBQM25y6ZEL8
iGr/NOnENzmeeMKmTK7R2HGjbnTaKG4z37w67WTE3PdBZV9OSjODbphBufZ4vhp7QEUVFRHLc/iD/CIBdzz7ypR26B+TDh17hPgaAVjt0UaAOZJk
N8TG2ypboup2GSG3ymuUohW3R4kBELmyapkqa+dulEoqCKA5XaW3msDdLq042/J0eb0Tvmm6YPWi6AnEPaXFQVt0zC/uJDUUjdi3Nwbpy5Gpouyw
QY5Abs3Tq+uLUKWzkRsuCZuohgh0yXW2ctO+fjdXJ2qMxJCiWG+K8G6v8kSKxwBdhkZQlN1mCGwD3M4YzQE7qbrTpN64fhjwy1QjA3WqYWDjVrxq
dQjihut7PizNAHHlznGhzdciCExDjLqvlzvjW66VT77HKwGqhcbct19jKj/KNjokjfFIbsRKR2wcCHgNWVX+3ZVAdM/k2KUN0vNNuy2hUKnmWI97
tfgzdmu0De0QDVL6AbIW7Pk8YT9wKAqrPgqt2p9ospEV8SoxU4DbtYv4jok3dwXVXcg3bE+ALIhuiNCRzt9u2U3jLD4ZI5pyBXrdtzyJOmNGP404
5Vm7cQxckMau1e7dOsN27dEfmjG2xJGn2/buKP1gm1O5hHOi/M3cyNeSLGQrMj7iipu6SqwSHQf9Uha3n7d1LvYkXgpfqdFQ0G7tgf5ZzEnf4naQ
6N3dx8ItankMqRV9hbvQ51hkOOWKG8Yiw3fN1c+ceriOhSWCJu/PjTbphZJyGCMiTd/z90LNTp0QN4I/m8DRvdkBAy1u7EZtN4JxC9pW0joHLWhW
bwUYuWxeeirH2SX23g83sZJZWxMl+KJJvCLNgSM3uBoroWhDeEkbL9Yu6Y7bFFFW8OgAKP+FOU6YI1Jt4nWt20618qJFDJMbxcYZ8gNsal0SDfS3
jbd0r2ZeCT+G1LdvIN2lppXHuIL10sjeRzf6BcGq/b9uyKW8nV4GgaXQQ2LK25N5Tt47FOd56H7IhpbyrD0Gg63WVfUe1A3lza8AhQBZV+M/hVvM
f4MtcUK5F45xJzedKY73jOTe20SAYG8+hFE87tM0EpZO1N5+mSQHgdJ2+JjEZb0DsKjF4PdAqK9Tw3ovj4b4RHkfdcPOlvRuEhldm7MdtbE1zekJ
56DNdqR6+fcLW9LIClZpebgU4zxgt6ZbY2KxkRYoTZu4b00yyMICIvL3C26M3qBxBLQzktaVtiJFvUwExicTDRdq5gPbeslr8NF+sqEK7srm9aHP
Q3ZJAYSKR7Tt6+ueUb2ODCcqBu0b2BajBQDKsKhfOru3srA8Zc/kP+5E/0pvbDEH5i33XTf8S5re2ym2WrRcboSryUG9w1FbD88KZQiK+ut7owAF
g3Lf1mEwSZb3bxrgp3vlaGR2M63vMnMft18AtMrNOxveqZZymuzmZ/BLwre/OOjotjrAIIxbvW+BYsqms3Z3d3i6Rt8EKFl7lmjlpnSyMb4O54SK
6Q36UQtl+3w0mwTmdJotp7E4RviqAzHVKlOcsY1crfH8K9XsfZrEP1Acm+QC3up5a7EnRvtLN8pu5NipEdXUVmfDb5l9P3kxCtAFb7Je3zQ0z/tF
nWaHx9p5voocqxofMDoO5wd7fUTuzf9G4H6NoLn2+vG3/zsrptXmApTt9iaK0jACJiyv6aMb7WCw4a2ppbsqpRI325iw9hSYjdxG6FZvuD4Ln+7c
tMqZGO7ffPeav/F6V6593NG/DdTNFzoLokRSCWt+MkWBuBnadHqs5Fb8eajqRHw9ikxFcu35KL8nVRl7ZVtZ/1vzalV0zvS1lMrpHLfnjZFQ7eyp
TgFs0m/QyjkFkngUfhKzst+iiXVRMcoX1oHcVb9JjHsKWesiNJZWA36jlMsKgE4iIJoHlv1aK9Fg5lfOMHukbfsPMwVVj16ponBZG/gmHFcDbyLL
WgPQN/Eg7iJt/ozNxKwRb+R/B+lNmUQ5u3T839VGvIsCOrjPbIgxv7Q7H+UQdKNDKpoTf8WRTvg3VSpKXTCm/9w6EGthmpkc0Mht/+XkAelOlpkq
1MXA
"""


def _read_table(dimension):
    """[(polynomial as an int with its leading and trailing 1, [initial odd numbers])] for dims 1..dimension-1."""
    bits = numpy.unpackbits(numpy.frombuffer(base64.b64decode("".join(_PACKED.split())), dtype=numpy.uint8))
    position = 0

    def take(width):
        nonlocal position
        value = 0
        for bit in bits[position:position + width]:
            value = (value << 1) | int(bit)
        position += width
        return value

    table = []
    for _ in range(1, dimension):
        m = take(5)
        polynomial = (1 << m) | (take(m - 1) << 1) | 1
        table.append((polynomial, [(take(i) << 1) | 1 for i in range(m)]))
    return table


def direction_numbers(dimension):
    """(dimension, MAXBIT) int64: the direction numbers of each dimension as 30-bit fixed-point integers."""
    state = numpy.ones((dimension, MAXBIT), dtype=numpy.int64)  # the first dimension: van der Corput's
    for d, (polynomial, initial) in enumerate(_read_table(dimension), start=1):
        m = len(initial)
        state[d, :m] = initial
        for j in range(m, MAXBIT):
            value = state[d, j - m]
            for k in range(m):  # coefficient of v[j-k-1], scaled by 2^(k+1)
                if (polynomial >> (m - 1 - k)) & 1:
                    value ^= state[d, j - k - 1] << (k + 1)
            state[d, j] = value
    return state << numpy.arange(MAXBIT - 1, -1, -1, dtype=numpy.int64)


def _bits_msb_first(values):
    """values (...) int64 of MAXBIT bits -> (..., MAXBIT) 0/1, the most significant bit first."""
    return (values[..., None] >> numpy.arange(MAXBIT - 1, -1, -1, dtype=numpy.int64)) & 1


def scramble(state, lower):
    """Each dimension's direction numbers times its random lower-triangular bit matrix (diagonal set to 1) over
    GF(2), on the bits read most significant first: state (D, MAXBIT), lower (D, MAXBIT, MAXBIT) of 0/1."""
    matrices = lower.copy()
    matrices[:, numpy.arange(MAXBIT), numpy.arange(MAXBIT)] = 1
    scrambled = numpy.einsum("dpk,djk->djp", matrices, _bits_msb_first(state)) & 1
    return scrambled @ (1 << numpy.arange(MAXBIT - 1, -1, -1, dtype=numpy.int64))


def _lowest_zero_bits(first, count):
    """The position of the lowest 0 bit of each of first, first+1, ..., first+count-1."""
    indices = numpy.arange(first, first + count, dtype=numpy.int64)
    lowest_one_of_complement = ~indices & (indices + 1)
    return numpy.log2(lowest_one_of_complement).astype(numpy.int64)


class SobolEngine:
    """An engine drawing (scrambled) Sobol' sequences of ``dimension`` coordinates, as PyTorch's
    ``torch.quasirandom.SobolEngine(dimension, scramble=False, seed=None)``."""

    MAXBIT = MAXBIT
    MAXDIM = MAXDIM

    def __init__(self, dimension, scramble=False, seed=None):
        if dimension > self.MAXDIM or dimension < 1:
            raise ValueError(f"Supported range of dimensionality for SobolEngine is [1, {self.MAXDIM}]")
        if dimension > TABLE_DIMENSIONS:
            raise ValueError(f"chainrule's SobolEngine holds the direction numbers of the first {TABLE_DIMENSIONS} "
                             f"dimensions (PyTorch's of {self.MAXDIM}); got dimension={dimension}")
        self.seed = seed
        self.scramble = scramble
        self.dimension = dimension
        self._state = direction_numbers(dimension)
        if not scramble:
            self._shift = numpy.zeros(dimension, dtype=numpy.int64)
        else:
            self._scramble()
        self._quasi = self._shift.copy()
        # (PyTorch divides in the default dtype of this moment, and later draws of the first point convert that)
        first = backend.xp.asarray(self._quasi.astype(backend.get_default_dtype()) / 2 ** MAXBIT)
        self._first_point = Tensor._make(first.reshape(1, -1))
        self.num_generated = 0

    def _scramble(self):
        generator = None if self.seed is None else Generator().manual_seed(self.seed)
        shift_bits = randint(2, (self.dimension, MAXBIT), generator=generator).numpy()
        self._shift = shift_bits @ (1 << numpy.arange(MAXBIT, dtype=numpy.int64))  # least significant bit first
        lower = numpy.tril(randint(2, (self.dimension, MAXBIT, MAXBIT), generator=generator).numpy())
        self._state = scramble(self._state, lower)

    # PyTorch's state tensors, as attributes of its engine
    sobolstate = property(lambda self: Tensor._make(backend.xp.asarray(self._state)))
    shift = property(lambda self: Tensor._make(backend.xp.asarray(self._shift)))
    quasi = property(lambda self: Tensor._make(backend.xp.asarray(self._quasi)))

    def _advance(self, count, first_index):
        """The next ``count`` integer points after the current one, from index ``first_index``."""
        if count < 0:  # (draw(0) as the first draw asks for -1 points after the first, as in PyTorch)
            raise RuntimeError(f"Trying to create tensor with negative dimension {count}: [{count}, {self.dimension}]")
        columns = self._state[:, _lowest_zero_bits(first_index, count)]  # (D, count)
        points = numpy.bitwise_xor.accumulate(numpy.concatenate([self._quasi[:, None], columns], 1), axis=1)[:, 1:]
        if count:
            self._quasi = points[:, -1].copy()
        return points.T

    def draw(self, n=1, out=None, dtype=None):
        """The next ``n`` points, (n, dimension), in ``dtype`` (the default dtype without)."""
        dtype = numpy.dtype(backend.get_default_dtype() if dtype is None else dtype)
        if dtype not in (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64)):
            raise NotImplementedError(f"\"_sobol_engine_draw\" not implemented for '{type_name(dtype)}'")
        if self.num_generated == 0:
            first = self._first_point.to(dtype)
            if n == 1:
                result = first
            else:
                rest = self._advance(n - 1, self.num_generated)
                result = Tensor._make(backend.xp.concatenate(
                    [first._data, backend.xp.asarray(rest.astype(dtype) * dtype.type(_RECIPROCAL))]))
        else:
            points = self._advance(n, self.num_generated - 1)
            result = Tensor._make(backend.xp.asarray(points.astype(dtype) * dtype.type(_RECIPROCAL)))
        self.num_generated += n
        if out is not None:
            out.resize_as_(result).copy_(result)
            return out
        return result

    def draw_base2(self, m, out=None, dtype=None):
        """The next 2**m points; the points drawn so far and these must number a power of 2 (the balance
        properties of Sobol' points)."""
        n = 2 ** m
        total_n = self.num_generated + n
        if total_n & (total_n - 1) != 0:
            raise ValueError("The balance properties of Sobol' points require n to be a power of 2. "
                             f"{self.num_generated} points have been previously generated, then: "
                             f"n={self.num_generated}+2**{m}={total_n}. If you still want to do this, please use "
                             "'SobolEngine.draw()' instead.")
        return self.draw(n=n, out=out, dtype=dtype)

    def reset(self):
        """Back to the first point."""
        self._quasi = self._shift.copy()
        self.num_generated = 0
        return self

    def fast_forward(self, n):
        """Skip ``n`` points, as drawing them would."""
        if n > 0:
            self._advance(n - 1 if self.num_generated == 0 else n,
                          self.num_generated if self.num_generated == 0 else self.num_generated - 1)
        self.num_generated += n
        return self

    def __repr__(self):
        fmt_string = [f"dimension={self.dimension}"]
        if self.scramble:
            fmt_string += ["scramble=True"]
        if self.seed is not None:
            fmt_string += [f"seed={self.seed}"]
        return self.__class__.__name__ + "(" + ", ".join(fmt_string) + ")"
