"""Build hook: the optional C hot path of the hook runner (pure-Python fallback if it fails)."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("minifw.hooks._hot", ["src/minifw/hooks/_hot.c"], optional=True,
                             extra_compile_args=["-O2", "-Wall"])])
