# Declarations for gwcore.cachekey (see _cachekey_py.py for the behaviour).

cdef class KeySpec:
    cdef readonly str namespace
    cdef readonly tuple path_params
    cdef readonly tuple query
    cdef readonly tuple headers
    cdef readonly bint strict
    cdef readonly frozenset allowed
    cdef frozenset _qset
    cdef frozenset _hset
    cdef str _prefix

    cpdef object key(self, str method, object host, str path, object query,
                     object headers, object path_params, object identity=*, object body=*)
