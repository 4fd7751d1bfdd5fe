// The control server (corral/control/server.hpp) for the Python side, which decides where
// it listens (stack.py, _api.py). Creating, stopping and waiting release the GIL; the
// server's own thread never takes it.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "bindings.hpp"
#include "edge.hpp"
#include "corral/control/server.hpp"
#include "corral/engine/engine.hpp"

namespace py = pybind11;

namespace corral::bindings {

namespace {
using control::ControlServer;

// Destroying a server joins its thread: never with the GIL held.
struct ReleasingDelete {
  void operator()(ControlServer* s) const {
    if (Py_IsInitialized() && PyGILState_Check()) {
      without_gil([s] { delete s; });
    } else {
      delete s;
    }
  }
};
using ServerHolder = std::unique_ptr<ControlServer, ReleasingDelete>;
}  // namespace

void register_control(py::module_& m) {
  py::class_<ControlServer, ServerHolder>(m, "ControlServer")
      .def(py::init([](Stack& stack, const std::string& unix_path, bool tcp, const std::string& tcp_host, int tcp_port,
                       const std::string& token, const std::string& openapi, const std::string& static_root) {
             control::ServerOptions o;
             o.unix_path = unix_path;
             o.tcp = tcp;
             o.tcp_host = tcp_host;
             if (tcp_port < 0 || tcp_port > 65535) throw py::value_error("tcp_port must be in 0..65535");
             o.tcp_port = static_cast<unsigned short>(tcp_port);
             o.token = token;
             o.openapi = openapi;
             o.static_root = static_root;
             return ServerHolder(without_gil([&] { return new ControlServer(stack, std::move(o)); }));
           }),
           py::arg("stack"), py::arg("unix_path") = std::string(), py::kw_only(), py::arg("tcp") = false,
           py::arg("tcp_host") = std::string("127.0.0.1"), py::arg("tcp_port") = 0, py::arg("token") = std::string(),
           py::arg("openapi") = std::string(), py::arg("static_root") = std::string(),
           py::keep_alive<1, 2>())  // the stack handle outlives its server
      .def("stop", [](ControlServer& s) { without_gil([&] { s.stop(); }); })
      .def_property_readonly("unix_path", &ControlServer::unix_path)
      .def_property_readonly("tcp_port", &ControlServer::tcp_port)
      .def_property_readonly("stop_requests", &ControlServer::stop_requests)
      .def("login_url", &ControlServer::login_url,
           "A one-time browser login link (TCP only): opening it sets the session cookie.")
      .def(
          "set_document",
          [](ControlServer& s, const std::string& name, const std::string& json) {
            without_gil([&] { s.set_document(name, json); });  // a large document parses in ms
          },
          py::arg("name"), py::arg("json"),
          "Replaces a document the server serves: \"runs\" (GET /v1/runs), a JSON object.")
      .def(
          "wait_stop_request",
          [](ControlServer& s, std::optional<double> timeout) {
            // In slices, so that Ctrl+C interrupts the wait.
            using Clock = std::chrono::steady_clock;
            auto end = timeout ? Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                    std::chrono::duration<double>(std::max(0.0, *timeout)))
                               : Clock::time_point::max();
            while (true) {
              double left = std::chrono::duration<double>(end - Clock::now()).count();
              double slice = std::max(0.0, std::min(0.05, left));
              if (without_gil([&] { return s.wait_stop_request(slice); })) return true;
              if (Clock::now() >= end) return false;
              if (PyErr_CheckSignals() != 0) throw py::error_already_set();
            }
          },
          py::arg("timeout") = py::none());
}

}  // namespace corral::bindings
