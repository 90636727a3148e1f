"""Test support: the stand-in GPU (``fake_gpu``) that plays CuPy on machines without one."""
