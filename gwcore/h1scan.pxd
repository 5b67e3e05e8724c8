# What other compiled gwcore modules call in gwcore.h1scan as C functions (cimport), not
# through Python calls: the forwarding lane's scanner and writers (http1, lane). Keep in step
# with h1scan.pyx (and h1scan.pyi, the Python view).

cpdef object scan_lane(bytes data, Py_ssize_t limit, dict lanes)
cpdef object lane_head(bytes data, str path, str fixed_query, str host, str peer, str fwd_port,
                       str framing)
cpdef object relay(bytes data, bytes ok_line, bytes date, bytes rid_line, str rid, bint close)
