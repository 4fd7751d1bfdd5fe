// The per-user runtime directory for the Python side (the pytest plugin's run files), so
// that both languages create and check it the same way (corral/os/runtime_dir.hpp).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>

#include "bindings.hpp"
#include "corral/core/types.hpp"
#include "corral/os/runtime_dir.hpp"
#include "corral/spawn/spawn.hpp"

namespace py = pybind11;

namespace corral::bindings {

namespace {
// An unsafe directory is the user's to fix: a CorralError that names it, not a RuntimeError.
template <class F>
std::string checked(F&& f) {
  try {
    return f();
  } catch (const std::runtime_error& e) {
    throw Error(e.what());
  }
}
}  // namespace

void register_os(py::module_& m) {
  // A thread the Python layer starts for a stack, counted as corral's own clone (see
  // note_clone_begun in spawn.hpp): begun before Thread.start(), done once it started.
  m.def("note_clone_begun", [] { note_clone_begun(); });
  m.def("note_clone_done", [] { note_clone_done(); });
  m.def("note_clone_failed", [] { note_clone_failed(); });
  m.def("runtime_dir", [] { return checked([] { return os::runtime_dir(); }); },
        "corral's per-user runtime directory, created private (0700, ours, not a symlink).");
  m.def("private_dir", [](const std::string& path) { return checked([&] { return os::private_dir(path); }); },
        py::arg("path"), "Creates `path` 0700 if missing and checks it like the runtime directory.");
}

}  // namespace corral::bindings
