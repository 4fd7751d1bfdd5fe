// C++ errors become the Python exception tree of corral.errors (the public one), so users
// catch one set of classes whether an error came from Python validation or the engine.
#include <pybind11/pybind11.h>

#include "bindings.hpp"
#include "corral/core/types.hpp"

namespace py = pybind11;

namespace corral::bindings {

namespace {
void raise(const char* cls, const char* what) {
  py::object errors = py::module_::import("corral.errors");
  PyErr_SetString(errors.attr(cls).ptr(), what);
}
}  // namespace

void register_errors(py::module_&) {
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const ConfigError& e) {
      raise("ConfigError", e.what());
    } catch (const TimeoutError& e) {
      raise("Timeout", e.what());
    } catch (const Error& e) {
      raise("CorralError", e.what());
    }
  });
}

}  // namespace corral::bindings
