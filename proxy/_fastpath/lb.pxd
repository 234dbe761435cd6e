cdef class RoundRobin:
    cdef readonly tuple hosts
    cdef Py_ssize_t n
    cdef Py_ssize_t cursor
    cdef bint weighted
    cdef long total
    cdef list weights
    cdef list credits
    cpdef object pick(self)
