// corral._core: only creates the module and hands each area to its own file.
#include <pybind11/pybind11.h>

#include "bindings.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "corral's native engine (private; use the `corral` package)";
  corral::bindings::register_errors(m);
  corral::bindings::register_specs(m);
  corral::bindings::register_engine(m);
  corral::bindings::register_metrics(m);
  corral::bindings::register_os(m);
  corral::bindings::register_control(m);
}
