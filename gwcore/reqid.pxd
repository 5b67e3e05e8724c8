# What other compiled gwcore modules call in gwcore.reqid as a C function (cimport).

cpdef str new_request_id()
