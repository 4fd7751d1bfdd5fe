// Events to Python objects with the C API: a consumer of a flooding service converts
// millions of them a second, and pybind11's item assignment (a new key string per item, a
// handle per value) cost about 1.6 us an event. Keys and the fixed values are interned once;
// service names are decoded once per batch.
#include "event_conversion.hpp"

#include <array>
#include <cstring>
#include <string>
#include <utility>

#include "edge.hpp"

namespace py = pybind11;

namespace corral::bindings {
namespace {

struct EventKeys {
  PyObject *time, *service, *kind, *stream, *text, *state, *reason, *exit_code, *count, *index;
  PyObject *log, *state_kind, *dropped, *out, *err;
  std::array<PyObject*, state_count> states;
};

const EventKeys& event_keys() {
  static const EventKeys* keys = [] {
    auto* k = new EventKeys();  // never freed: lives as long as the module
    auto intern = [](const char* s) { return PyUnicode_InternFromString(s); };
    k->time = intern("time");
    k->service = intern("service");
    k->kind = intern("kind");
    k->stream = intern("stream");
    k->text = intern("text");
    k->state = intern("state");
    k->reason = intern("reason");
    k->exit_code = intern("exit_code");
    k->count = intern("count");
    k->index = intern("index");
    k->log = intern("log");
    k->state_kind = k->state;
    k->dropped = intern("dropped");
    k->out = intern("stdout");
    k->err = intern("stderr");
    for (std::size_t i = 0; i < k->states.size(); ++i)
      k->states[i] = intern(std::string(to_string(static_cast<State>(i))).c_str());
    return k;
  }();
  return *keys;
}

// Sets d[key] = value and drops the reference to value (which may be null after a failed
// conversion: then the error propagates).
void put(PyObject* d, PyObject* key, PyObject* value) {
  if (value == nullptr) throw py::error_already_set();
  int rc = PyDict_SetItem(d, key, value);
  Py_DECREF(value);
  if (rc != 0) throw py::error_already_set();
}

void put_borrowed(PyObject* d, PyObject* key, PyObject* value) {
  if (PyDict_SetItem(d, key, value) != 0) throw py::error_already_set();
}

// The decoded names of a batch's services. A stack has few services and a batch usually
// holds runs of one, so a short list searched from the last hit beats a hash map.
class Names {
 public:
  PyObject* get(const std::string& name) {
    if (last_ < names_.size() && names_[last_].first == name) return names_[last_].second.ptr();
    for (std::size_t i = 0; i < names_.size(); ++i)
      if (names_[i].first == name) return names_[last_ = i].second.ptr();
    names_.emplace_back(name, text(name));
    last_ = names_.size() - 1;
    return names_.back().second.ptr();
  }

 private:
  std::vector<std::pair<std::string, py::str>> names_;
  std::size_t last_ = 0;
};

py::dict event_dict(const EngineEvent& e, PyObject* name) {
  const EventKeys& k = event_keys();
  auto d = py::reinterpret_steal<py::dict>(PyDict_New());
  if (!d) throw py::error_already_set();
  put(d.ptr(), k.time, PyFloat_FromDouble(static_cast<double>(e.time_ns) / 1e9));
  put_borrowed(d.ptr(), k.service, name);
  if (e.kind == EngineEvent::Kind::log) {
    put_borrowed(d.ptr(), k.kind, k.log);
    put_borrowed(d.ptr(), k.stream, e.stream == Stream::out ? k.out : k.err);
    put(d.ptr(), k.text, text(e.text).release().ptr());
  } else if (e.kind == EngineEvent::Kind::state) {
    put_borrowed(d.ptr(), k.kind, k.state_kind);
    put_borrowed(d.ptr(), k.state, k.states[static_cast<std::size_t>(e.state)]);
    put(d.ptr(), k.reason, text(e.text).release().ptr());
    if (e.exit_code)
      put(d.ptr(), k.exit_code, PyLong_FromLong(*e.exit_code));
    else
      put_borrowed(d.ptr(), k.exit_code, Py_None);
  } else {
    put_borrowed(d.ptr(), k.kind, k.dropped);
    put(d.ptr(), k.count, PyLong_FromUnsignedLongLong(std::stoull(e.text)));
  }
  return d;
}

py::list new_list(std::size_t n) {
  auto l = py::reinterpret_steal<py::list>(PyList_New(static_cast<Py_ssize_t>(n)));
  if (!l) throw py::error_already_set();
  return l;
}

}  // namespace

py::list event_list(const std::vector<EngineEvent>& events) {
  py::list out = new_list(events.size());
  Names names;
  for (std::size_t i = 0; i < events.size(); ++i) {
    py::dict d = event_dict(events[i], names.get(events[i].service));
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), d.release().ptr());
  }
  return out;
}

py::tuple event_columns(const std::vector<EngineEvent>& events) {
  const EventKeys& k = event_keys();
  std::size_t logs = 0;
  for (const auto& e : events) logs += e.kind == EngineEvent::Kind::log;
  // Every list is filled completely before anyone can see it (PyList_New leaves null slots).
  py::list texts = new_list(logs), services = new_list(logs), streams = new_list(logs);
  auto times = py::reinterpret_steal<py::bytes>(
      PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(logs * sizeof(double))));
  if (!times) throw py::error_already_set();
  char* time_out = PyBytes_AS_STRING(times.ptr());
  py::list states;
  std::uint64_t dropped = 0;
  Names names;
  std::size_t i = 0;
  for (const auto& e : events) {
    if (e.kind == EngineEvent::Kind::log) {
      PyObject* line = PyUnicode_DecodeUTF8(e.text.data(), static_cast<Py_ssize_t>(e.text.size()), "replace");
      // On an error the lists are dropped with null slots past i, which list_dealloc skips.
      if (line == nullptr) throw py::error_already_set();
      PyObject* name = names.get(e.service);
      PyObject* stream = e.stream == Stream::out ? k.out : k.err;
      Py_INCREF(name);
      Py_INCREF(stream);
      auto at = static_cast<Py_ssize_t>(i);
      PyList_SET_ITEM(texts.ptr(), at, line);
      PyList_SET_ITEM(services.ptr(), at, name);
      PyList_SET_ITEM(streams.ptr(), at, stream);
      double t = static_cast<double>(e.time_ns) / 1e9;
      std::memcpy(time_out + i * sizeof(double), &t, sizeof(double));
      ++i;
    } else if (e.kind == EngineEvent::Kind::state) {
      py::dict d = event_dict(e, names.get(e.service));
      put(d.ptr(), k.index, PyLong_FromSize_t(i));
      states.append(std::move(d));
    } else {
      dropped += std::stoull(e.text);
    }
  }
  return py::make_tuple(std::move(texts), std::move(services), std::move(streams), std::move(times),
                        std::move(states), dropped);
}

}  // namespace corral::bindings
