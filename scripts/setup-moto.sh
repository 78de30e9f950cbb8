#!/usr/bin/env bash
# Installs the S3-compatible test server (moto, from PyPI, pinned) into $CTP_VENV and checks,
# once per version, that it refuses a create-only put over an existing key with 412
# (`If-None-Match: *`). The ctp-storage tests rely on that answer; if a version of moto gives any
# other, this script fails loudly instead of letting the race tests pass or fail for the wrong
# reason. The same goes for completing a multipart upload create-only, which ctp-storage uses to
# publish large files. Idempotent: the checks are recorded in $CTP_VENV/.moto-<version>.checked.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
. "$here/env.sh"
want=5.2.6
stamp="$CTP_VENV/.moto-$want.checked"
if [ ! -x "$CTP_PYTHON" ]; then
  # setup-torch.sh creates the venv with torch; the S3 tests need only a bare one.
  mkdir -p "$CTP_CACHE"
  python3 -m venv "$CTP_VENV"
fi
if [ -f "$stamp" ] && [ -x "$CTP_VENV/bin/moto_server" ]; then
  exit 0
fi
if ! "$CTP_PYTHON" -c "import sys, importlib.metadata as m; sys.exit(m.version('moto') != '$want')" 2>/dev/null; then
  echo "ctp: installing moto[s3,server]==$want into $CTP_VENV ..." >&2
  if ! "$CTP_VENV/bin/pip" install -q --disable-pip-version-check "moto[s3,server]==$want"; then
    echo "ctp: error: could not install moto[s3,server]==$want from PyPI (is https://pypi.org reachable?)" >&2
    exit 1
  fi
fi
# Start one server on a free port and check that create-only puts are refused with 412.
port="$("$CTP_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
log="$(mktemp)"
"$CTP_VENV/bin/moto_server" -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; rm -f "$log"' EXIT
if ! AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "$CTP_PYTHON" - "$port" <<'EOF'
import sys, time, boto3, botocore.exceptions
port = sys.argv[1]
url = f"http://127.0.0.1:{port}"
for _ in range(200):
    try:
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1")
        s3.list_buckets()
        break
    except Exception:
        time.sleep(0.05)
else:
    sys.exit(f"moto_server did not answer on {url}")
s3.create_bucket(Bucket="ctp-setup-check")
s3.put_object(Bucket="ctp-setup-check", Key="k", Body=b"first", IfNoneMatch="*")
try:
    s3.put_object(Bucket="ctp-setup-check", Key="k", Body=b"second", IfNoneMatch="*")
    sys.exit("a create-only put (If-None-Match: *) over an existing key succeeded; expected 412")
except botocore.exceptions.ClientError as e:
    status = e.response["ResponseMetadata"]["HTTPStatusCode"]
    if status != 412:
        sys.exit(f"a create-only put over an existing key answered {status}; expected 412")
body = s3.get_object(Bucket="ctp-setup-check", Key="k")["Body"].read()
if body != b"first":
    sys.exit(f"the refused create-only put changed the object: {body!r}")
# Large files are published by a create-only multipart copy (UploadPartCopy, then
# CompleteMultipartUpload with If-None-Match: *).
up = s3.create_multipart_upload(Bucket="ctp-setup-check", Key="k")["UploadId"]
part = s3.upload_part_copy(Bucket="ctp-setup-check", Key="k", UploadId=up, PartNumber=1,
                           CopySource={"Bucket": "ctp-setup-check", "Key": "k"})
parts = {"Parts": [{"ETag": part["CopyPartResult"]["ETag"], "PartNumber": 1}]}
try:
    s3.complete_multipart_upload(Bucket="ctp-setup-check", Key="k", UploadId=up,
                                 MultipartUpload=parts, IfNoneMatch="*")
    sys.exit("a create-only multipart completion over an existing key succeeded; expected 412")
except botocore.exceptions.ClientError as e:
    status = e.response["ResponseMetadata"]["HTTPStatusCode"]
    if status != 412:
        sys.exit(f"a create-only multipart completion over an existing key answered {status}; expected 412")
EOF
then
  echo "ctp: error: moto $want does not honour create-only writes (If-None-Match: *); the ctp-storage tests need it. Server log:" >&2
  cat "$log" >&2
  exit 1
fi
touch "$stamp"
echo "ctp: moto $want installed; create-only puts answer 412" >&2
