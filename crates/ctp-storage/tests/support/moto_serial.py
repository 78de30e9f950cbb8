"""moto_server with its writes serialized, as S3 serializes conditional writes.

moto checks `If-None-Match: *` and then stores the object without a lock
(moto/s3/responses.py), so on its threaded server two racing create-only writes can both
pass, which S3 never allows. This runs moto_server's own main() (same arguments) with every
PUT, POST and DELETE taken under one lock; reads stay concurrent.
"""
import sys
import threading

import moto.server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_lock = threading.Lock()
_call = DomainDispatcherApplication.__call__


def _serialized(self, environ, start_response):
    if environ.get("REQUEST_METHOD") in ("PUT", "POST", "DELETE"):
        with _lock:
            # Produce the whole response under the lock.
            return list(_call(self, environ, start_response))
    return _call(self, environ, start_response)


DomainDispatcherApplication.__call__ = _serialized

if __name__ == "__main__":
    moto.server.main(sys.argv[1:])
