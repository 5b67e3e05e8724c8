"""gwproxy's own HTTP/1.1 front end (uvloop + httptools) and its process supervisor."""
