#!/usr/bin/env bash
# The one command to run on the GPU machine: the cuda-marked tests, then `python -m bench.gpu`.
#
# Through the device tool (its `run` verb), from the repository root of this session's checkout:
#   1. here, once per checkout (needs pip and a package index; ~3 MB of wheels into .whl/, which
#      this adds to .git/info/exclude):
#        bash bench/gpu_check.sh --fetch-wheels
#   2. on the device:
#        run(command="bash bench/gpu_check.sh", carry=[".whl"], timeout_s=540)
#      Results come back from $OUT: gpu.json (the report), gpu_check.log (everything printed),
#      pytest.log and env.txt. bench/results/gpu.json is written on the device machine too, but
#      only what is under $OUT comes back: copy $OUT/gpu.json to bench/results/gpu.json here.
#
# Why the wheels: the GPU machine has torch, transformers, peft, numpy, httpx, pytest (see
# /work/.library/device/KINDS.md) but no network and no pydantic, pydantic-settings, fastapi
# (nor faiss, uvicorn). pydantic is needed by everything: less_core.config imports less_wire
# (pydantic models) and indexer.manifest is a pydantic model; fastapi, starlette and
# pydantic-settings by the service's cuda test. Without .whl/ the script says what is missing,
# skips the service tests, and stops if pydantic is absent (nothing of the project imports).
# The project itself is not pip-installed there: PYTHONPATH gets the repository root and client/,
# and a metadata-only dist-info makes importlib.metadata.version("less-client") answer (the SDK
# reads its own version at import).
#
# The working tree that travels must stay under 64 MiB (tracked + untracked-not-ignored files +
# carried paths): the repository is about 1 MB and .whl/ about 3 MB; data/, runs/, .venv/ are
# ignored and do not travel (nothing here needs them: every model and datastore is built in code).
#
# Time: tests at most 150 s, bench.gpu at most 300 s (it writes its report after every section,
# so a run cut short keeps what it finished); under 8 minutes in all, about 4 expected on an H200.
# A session has 15 minutes of device time, the machine's start (a minute or two) included: one
# full run, plus a short rerun if it stops early (e.g. at the import check); give the machine back
# afterwards. `-- --sections search` (etc.) reruns one part.
#
# Usage:
#   bash bench/gpu_check.sh                 on a machine with a CUDA GPU; fails at once without
#   bash bench/gpu_check.sh --cpu           the same steps on a CPU: cuda tests skip, bench.gpu
#                                           runs --device cpu --quick (report under $OUT or
#                                           /tmp/less-gpu-check, never bench/results/gpu.json)
#   bash bench/gpu_check.sh --fetch-wheels  download the wheels into .whl/ (run here, not there)
#   bash bench/gpu_check.sh [--cpu] -- ARGS pass ARGS on to python -m bench.gpu
# Environment: PYTHON (default .venv/bin/python if present, else python3), WHEEL_DIR (.whl),
# WHEEL_PYTHON_VERSION (3.12, the GPU machine's), SITE_DIR (/tmp/less-site).

set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

MODE=gpu
BENCH_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) MODE=cpu ;;
    --fetch-wheels) MODE=fetch ;;
    --) shift; BENCH_ARGS=("$@"); break ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x .venv/bin/python ]; then PY=.venv/bin/python
else PY=python3
fi
WHEEL_DIR="${WHEEL_DIR:-.whl}"
SITE_DIR="${SITE_DIR:-/tmp/less-site}"
# Wheels the GPU machine lacks, pinned to the versions installed where they are fetched.
# fastapi imports opentelemetry (its telemetry module) at import. No faiss: the tests' datastore
# and bench.gpu's use exact search (BuildConfig index_factory "Flat"), which needs none.
WHEELS="pydantic pydantic-core annotated-types typing-inspection typing-extensions
pydantic-settings python-dotenv fastapi starlette opentelemetry-api"

# ------------------------------------------------------------------ --fetch-wheels (here)
if [ "$MODE" = fetch ]; then
  pins=$("$PY" - "$WHEELS" <<'EOF'
import sys
from importlib.metadata import PackageNotFoundError, version

missing = []
for name in sys.argv[1].split():
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        missing.append(name)
if missing:
    sys.exit(f"not installed here, cannot pin: {missing}")
EOF
  ) || exit 1
  mkdir -p "$WHEEL_DIR" && rm -f "$WHEEL_DIR"/*.whl
  if [[ "$WHEEL_DIR" != /* ]]; then  # inside the checkout: keep git (and the diff) clean
    exclude="$(git rev-parse --git-path info/exclude)"
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/$WHEEL_DIR/" "$exclude" 2>/dev/null || echo "/$WHEEL_DIR/" >>"$exclude"
  fi
  # shellcheck disable=SC2086
  "$PY" -m pip download -q --no-deps --only-binary=:all: \
    --python-version "${WHEEL_PYTHON_VERSION:-3.12}" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d "$WHEEL_DIR" $pins || exit 1
  ls -la "$WHEEL_DIR"
  du -sh "$WHEEL_DIR"
  echo "gpu_check: wheels ready; run on the device with carry=[\"$WHEEL_DIR\"]"
  exit 0
fi

# ------------------------------------------------------------------ logs and results
if [ -n "${OUT:-}" ]; then RES="$OUT"; else RES=/tmp/less-gpu-check; fi
mkdir -p "$RES"
export PYTHONUNBUFFERED=1
T0=$(date +%s)

main() {
echo "gpu_check: mode=$MODE python=$PY root=$ROOT results=$RES ($(date -u +%FT%TZ))"

# ------------------------------------------------------------------ fail fast without a GPU
if [ "$MODE" = gpu ]; then
  if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: FAIL: no CUDA GPU visible to $PY (torch.cuda.is_available() is False)."
    echo "  Run it on the GPU machine through the device tool:"
    echo "    run(command=\"bash bench/gpu_check.sh\", carry=[\".whl\"], timeout_s=540)"
    echo "  or run the same steps on this CPU: bash bench/gpu_check.sh --cpu"
    return 2
  fi
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
fi

# ------------------------------------------------------------------ environment
if ! "$PY" -c "import pydantic" 2>/dev/null; then
  if compgen -G "$WHEEL_DIR/*.whl" >/dev/null; then
    echo "gpu_check: installing carried wheels from $WHEEL_DIR into $SITE_DIR"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target "$SITE_DIR" "$WHEEL_DIR"/*.whl || return 1
  else
    echo "gpu_check: pydantic is missing and no wheels in $WHEEL_DIR/ (see the top of $0)"
  fi
fi
mkdir -p "$SITE_DIR"
export PYTHONPATH="$SITE_DIR:$ROOT:$ROOT/client${PYTHONPATH:+:$PYTHONPATH}"
# The project is not installed there: metadata-only dist-infos, so that
# importlib.metadata.version() knows less-search and less-client (less_client reads its version).
"$PY" - "$SITE_DIR" <<'EOF'
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

site = Path(sys.argv[1])
for pyproject in (Path("pyproject.toml"), Path("client/pyproject.toml")):
    project = tomllib.loads(pyproject.read_text())["project"]
    try:
        version(project["name"])
    except PackageNotFoundError:
        name = project["name"].replace("-", "_")
        info = site / f"{name}-{project['version']}.dist-info"
        info.mkdir(parents=True, exist_ok=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
        )
        print(f"gpu_check: metadata-only {info.name} (source tree on PYTHONPATH)")
EOF

# What is there, and what of the project imports (env.txt comes back with the results).
"$PY" - >"$RES/env.txt" 2>&1 <<'EOF'
import importlib
import platform

print("python", platform.python_version(), platform.platform())
for mod in ("torch", "transformers", "peft", "accelerate", "numpy", "safetensors", "tokenizers",
            "pytest", "httpx", "anyio", "typing_extensions", "pydantic", "pydantic_core",
            "pydantic_settings", "fastapi", "starlette", "faiss", "uvicorn"):
    try:
        m = importlib.import_module(mod)
        print(f"{mod:20s} {getattr(m, '__version__', '?'):12s} {getattr(m, '__file__', '')}")
    except Exception as exc:
        print(f"{mod:20s} MISSING      {type(exc).__name__}: {exc}")
import torch

print("cuda", torch.cuda.is_available(), torch.version.cuda,
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
for mod in ("less_wire", "less_client", "less_core.config", "indexer.datastore", "indexer.query",
            "indexer.build", "bench.gpu", "service.app"):
    try:
        importlib.import_module(mod)
        print(f"import {mod:18s} ok")
    except Exception as exc:
        print(f"import {mod:18s} FAILS {type(exc).__name__}: {exc}")
EOF
cat "$RES/env.txt"
if grep -q "import bench.gpu .*FAILS" "$RES/env.txt"; then
  echo "gpu_check: FAIL: bench.gpu does not import here (above); carry the wheels (top of $0)"
  return 3
fi

# ------------------------------------------------------------------ cuda-marked tests
mapfile -t TEST_FILES < <(grep -rlE "mark\.cuda|pytestmark.*cuda" tests --include='test_*.py' | sort)
SKIPPED_FILES=()
if ! "$PY" -c "import fastapi, pydantic_settings" 2>/dev/null; then
  KEPT=()
  for f in "${TEST_FILES[@]}"; do
    if [[ "$f" == tests/service/* ]]; then SKIPPED_FILES+=("$f"); else KEPT+=("$f"); fi
  done
  TEST_FILES=("${KEPT[@]}")
  for f in "${SKIPPED_FILES[@]}"; do
    echo "gpu_check: SKIP $f: fastapi or pydantic-settings missing (carry the wheels)"
  done
fi
TEST_RC=0
if [ ${#TEST_FILES[@]} -gt 0 ]; then
  echo "gpu_check: python -m pytest -m cuda -q ${TEST_FILES[*]}"
  timeout 150 "$PY" -m pytest -m cuda -q -p no:cacheprovider "${TEST_FILES[@]}" 2>&1 \
    | tee "$RES/pytest.log"
  TEST_RC=${PIPESTATUS[0]}
else
  echo "gpu_check: no cuda-marked test file can run here"
fi
echo "gpu_check: tests rc=$TEST_RC ($(( $(date +%s) - T0 )) s so far)"

# ------------------------------------------------------------------ bench.gpu
if [ "$MODE" = gpu ]; then
  REPORT=bench/results/gpu.json
  ARGS=(--device cuda --out "$REPORT")
else
  REPORT="$RES/gpu_cpu_quick.json"  # CPU figures never go to bench/results/gpu.json
  ARGS=(--device cpu --quick --out "$REPORT")
fi
echo "gpu_check: python -m bench.gpu ${ARGS[*]} ${BENCH_ARGS[*]}"
timeout 300 "$PY" -m bench.gpu "${ARGS[@]}" "${BENCH_ARGS[@]}"
BENCH_RC=$?
[ "$BENCH_RC" = 124 ] && echo "gpu_check: bench.gpu stopped at its 300 s limit (partial report)"
if [ "$MODE" = gpu ] && [ -f "$REPORT" ] && [ "$RES" != "$(dirname "$REPORT")" ]; then
  cp "$REPORT" "$RES/gpu.json"
fi

# ------------------------------------------------------------------ summary
echo
echo "=================== gpu_check summary ($(( $(date +%s) - T0 )) s) ==================="
grep -E "^(FAILED|ERROR|SKIPPED)|[0-9]+ (passed|failed|skipped|error)" "$RES/pytest.log" 2>/dev/null \
  | tail -n 20 | sed 's/^/pytest: /'
for f in "${SKIPPED_FILES[@]}"; do echo "pytest: skipped $f (missing packages)"; done
"$PY" - "$REPORT" <<'EOF'
import json
import sys
from pathlib import Path

path = Path(sys.argv[1])
if not path.is_file():
    sys.exit(f"no report at {path}")
r = json.loads(path.read_text())
m = r["machine"]
print(f"report {path}: {m['device_name']} ({m['device']}), torch {m['torch']}, "
      f"{r.get('elapsed_s', 0):.0f} s")
for model, sec in r["sections"].get("featurize", {}).items():
    res = sec["results"]
    print(f"featurize {model} (LoRA d={sec['setup']['lora_params']:,}, "
          f"{sec['setup']['n']} ex x {sec['setup']['max_length']} tok max):")
    for name, v in res.items():
        ratio = v["median_s"] / res["floor"]["median_s"]
        print(f"  {name:20s} {v['examples_per_s']:9.2f} ex/s {v['tokens_per_s']:12,.0f} tok/s"
              f"  {ratio:5.2f}x floor")
search = r["sections"].get("search")
if search:
    for where, res in search["results"].items():
        s = search["setup"][where]
        print(f"search {where} ({s['n']:,} x {s['dim']}, k={s['k']}): "
              + ", ".join(f"{k} {v['p50']:.1f} ms" for k, v in res.items()))
    print("search ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in search["ratios"].items()))
req = r["sections"].get("requests")
if req:
    print("requests ratios: " + ", ".join(f"{k} {v:.2f}" for k, v in req["ratios"].items()))
for k, ok in r.get("checks", {}).items():
    print(f"check {'PASS' if ok else 'FAIL'} {k}")
for k, e in r.get("errors", {}).items():
    print(f"ERROR {k}: {e}")
EOF
echo "tests rc=$TEST_RC, bench.gpu rc=$BENCH_RC; results in $RES"
[ "$TEST_RC" = 0 ] && [ "$BENCH_RC" = 0 ]
}

main 2>&1 | tee "$RES/gpu_check.log"
exit "${PIPESTATUS[0]}"
