# Writing into a bytes object allocated at its final size (PyBytes_FromStringAndSize(NULL, n)):
# the inline helpers the serializers of proxy/_fastpath share (forward.pyx, http1.pyx,
# accesslog.pyx). Each returns the position after what it wrote.
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from libc.string cimport memcpy


cdef inline char* put_bytes(char* q, bytes b) noexcept:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(b)
    memcpy(q, PyBytes_AS_STRING(b), n)
    return q + n


cdef inline char* put_lit(char* q, const char* s, Py_ssize_t n) noexcept nogil:
    memcpy(q, s, n)
    return q + n


cdef inline char* put_dec(char* q, unsigned long long v) noexcept nogil:
    # decimal digits of v (at most 20)
    cdef char tmp[24]
    cdef int n = 0
    while True:
        tmp[n] = <char>(48 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    while n > 0:
        n -= 1
        q[0] = tmp[n]
        q += 1
    return q
