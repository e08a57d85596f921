"""CUDA kernels (``*.cu`` package data) and how to run them: on a GPU through CuPy, or on the CPU
under emulation (``GGUFKIT_CUDA_EMULATE=1``). See ``module`` (loading, emulation), ``xp`` (device
arrays), ``nvrtc`` (compile checks) and ``ops`` (kernel launchers)."""

from runtime.cuda.module import CudaError, emu_options, emulating, load, set_emulation  # noqa: F401
