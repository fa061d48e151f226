"""Editing methods behind one interface (:class:`xke.methods.base.EditMethod`)."""

from .base import (EditHandle, EditMethod, MethodConfig, WeightSnapshot, build_method, get_method_class,
                   method_names, register_method)

__all__ = ["EditHandle", "EditMethod", "MethodConfig", "WeightSnapshot", "build_method", "get_method_class",
           "method_names", "register_method"]
