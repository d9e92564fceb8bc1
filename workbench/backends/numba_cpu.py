"""The Numba backend: every family's kernels on the CPU (the reference the others are tested
against). Its codecs are the families' own (``spec.plugin.codec``)."""
from __future__ import annotations


class NumbaCPU:
    name = "numba-cpu"

    def available(self) -> str | None:
        return None

    def device(self) -> str:
        from workbench.store import device_name
        return device_name()

    def version(self) -> str:
        import numba
        return f"numba {numba.__version__}"

    def supports(self, spec) -> str | None:
        return None

    def codec(self, spec):
        return spec.plugin.codec(spec)


BACKEND = NumbaCPU()
