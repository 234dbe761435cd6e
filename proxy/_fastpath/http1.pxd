# HTTP/1.1 head parser, chunked decoder and head serializer: the cdef classes, declared here so that
# other Cython modules of proxy._fastpath can `cimport` them and read their fields at C speed.
# Documentation of every field: proxy/_fastpath/http1.pyx.


cdef class RequestHead:
    cdef readonly bytes method
    cdef readonly bytes target
    cdef readonly bytes path
    cdef readonly bytes host
    cdef readonly int version
    cdef readonly long long content_length
    cdef readonly bint chunked
    cdef readonly bint keep_alive
    cdef readonly bint expect_continue
    cdef readonly object upgrade
    cdef readonly bytes xff
    cdef readonly bytes xfp
    cdef readonly bytes request_id
    cdef readonly bytes headers
    cdef readonly Py_ssize_t head_len
    # the received header section (for get/get_all): _raw[_raw_start:_raw_end], CRLF-terminated lines
    cdef bytes _raw
    cdef Py_ssize_t _raw_start
    cdef Py_ssize_t _raw_end

    cdef object header(self, bytes name_lower)


cdef class ResponseHead:
    cdef readonly int status
    cdef readonly int version
    cdef readonly bytes reason
    cdef readonly long long content_length
    cdef readonly bint chunked
    cdef readonly bint keep_alive
    cdef readonly bytes headers
    cdef readonly bint no_body
    cdef readonly Py_ssize_t head_len
    cdef bytes _raw
    cdef Py_ssize_t _raw_start
    cdef Py_ssize_t _raw_end


cdef class ChunkedDecoder:
    cdef readonly bint done
    cdef readonly Py_ssize_t consumed
    cdef readonly bytes trailers
    cdef int _state
    cdef int _ndigits
    cdef unsigned long long _size
    cdef long long _remaining
    cdef Py_ssize_t _ext_len
    cdef Py_ssize_t _trailer_len
    cdef Py_ssize_t _max_ext
    cdef Py_ssize_t _max_trailer
    cdef bytearray _tbuf

    cdef object _feed(self, const unsigned char* p, Py_ssize_t n)
