// What every binding that waits or returns service output needs: releasing the GIL in a way
// that survives interpreter shutdown, and turning bytes a service printed into text.
#pragma once

#include <pybind11/pybind11.h>  // first: it includes Python.h the way pybind11 needs

#include <unistd.h>

#include <atomic>
#include <mutex>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>

namespace corral::bindings {

// Service output is bytes; Python wants text. Invalid UTF-8 becomes U+FFFD instead of a
// UnicodeDecodeError that would lose the line (and, for events, every line popped with it).
inline pybind11::str text(std::string_view bytes) {
  PyObject* s = PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "replace");
  if (s == nullptr) throw pybind11::error_already_set();
  return pybind11::reinterpret_steal<pybind11::str>(s);
}

// A thread that takes the GIL back while the interpreter is finalizing is ended by
// pthread_exit; its forced unwind through pybind11's noexcept frames aborts the whole process
// (exit 134) when a daemon thread is still inside a corral call at exit. So a thread coming
// back from a wait checks first, and once the interpreter is going away it never returns:
// it parks, and dies with the process.
//
// The check and the re-acquire happen under `gate`, and `begin_exit` (an atexit handler,
// the last corral one to run) sets `exiting` under the same lock with the GIL released, so no
// thread can pass the check and then meet a finalizing interpreter.
struct ExitGate {
  std::mutex gate;
  std::atomic<bool> exiting{false};
  std::thread::id exit_thread;  // the thread running atexit and finalization: never parked
};

inline ExitGate& exit_gate() {
  static ExitGate* g = new ExitGate();  // never destroyed: parked threads may still use it
  return *g;
}

inline bool interpreter_finalizing() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

[[noreturn]] inline void park_forever() noexcept {
  for (;;) pause();
}

// Called from Python's atexit, with the GIL held.
inline void begin_exit() {
  PyThreadState* ts = PyEval_SaveThread();
  {
    std::lock_guard lock(exit_gate().gate);
    exit_gate().exit_thread = std::this_thread::get_id();
    exit_gate().exiting = true;
  }
  PyEval_RestoreThread(ts);
}

inline void take_gil_back(PyThreadState* ts) noexcept {
  auto& g = exit_gate();
  std::unique_lock lock(g.gate);
  bool leaving = g.exiting.load() || interpreter_finalizing();
  if (leaving && std::this_thread::get_id() != g.exit_thread) {
    lock.unlock();
    park_forever();
  }
  PyEval_RestoreThread(ts);
}

// Runs `f` with the GIL released; exceptions from `f` propagate once the GIL is back.
template <class F>
auto without_gil(F&& f) -> decltype(f()) {
  struct Reacquire {
    PyThreadState* ts;
    ~Reacquire() { take_gil_back(ts); }
  } guard{PyEval_SaveThread()};
  return std::forward<F>(f)();
}

}  // namespace corral::bindings
