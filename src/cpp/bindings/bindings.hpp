#pragma once

#include <pybind11/pybind11.h>

namespace corral::bindings {
void register_errors(pybind11::module_& m);
void register_specs(pybind11::module_& m);
void register_engine(pybind11::module_& m);
void register_metrics(pybind11::module_& m);  // after register_engine: adds to Stack
void register_os(pybind11::module_& m);
void register_control(pybind11::module_& m);
}  // namespace corral::bindings
