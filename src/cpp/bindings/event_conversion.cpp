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

// The chunk's service names, each decoded once, when first needed.
class Names {
 public:
  explicit Names(const EventChunk& chunk) : chunk_(chunk), names_(chunk.services.size()) {}
  PyObject* get(const EventChunk::Item& i) {
    py::object& name = names_[i.service];
    if (!name) name = text(chunk_.service(i));
    return name.ptr();
  }

 private:
  const EventChunk& chunk_;
  std::vector<py::object> names_;
};

PyObject* decode(std::string_view bytes) {
  PyObject* s = PyUnicode_DecodeUTF8(bytes.data(), static_cast<Py_ssize_t>(bytes.size()), "replace");
  if (s == nullptr) throw py::error_already_set();
  return s;
}

py::dict new_dict() {
  auto d = py::reinterpret_steal<py::dict>(PyDict_New());
  if (!d) throw py::error_already_set();
  return d;
}

py::dict event_dict(const EventChunk& chunk, const EventChunk::Item& e, PyObject* name) {
  const EventKeys& k = event_keys();
  py::dict d = new_dict();
  put(d.ptr(), k.time, PyFloat_FromDouble(static_cast<double>(e.time_ns) / 1e9));
  put_borrowed(d.ptr(), k.service, name);
  if (e.kind == EngineEvent::Kind::log) {
    put_borrowed(d.ptr(), k.kind, k.log);
    put_borrowed(d.ptr(), k.stream, e.stream == Stream::out ? k.out : k.err);
    put(d.ptr(), k.text, decode(chunk.text(e)));
  } else {
    put_borrowed(d.ptr(), k.kind, k.state_kind);
    put_borrowed(d.ptr(), k.state, k.states[static_cast<std::size_t>(e.state)]);
    put(d.ptr(), k.reason, decode(chunk.text(e)));
    if (e.exit_code)
      put(d.ptr(), k.exit_code, PyLong_FromLong(*e.exit_code));
    else
      put_borrowed(d.ptr(), k.exit_code, Py_None);
  }
  return d;
}

// The `dropped` event events() puts first when a lossy queue lost lines.
py::dict dropped_dict(const EventChunk& chunk) {
  const EventKeys& k = event_keys();
  py::dict d = new_dict();
  put(d.ptr(), k.time, PyFloat_FromDouble(static_cast<double>(chunk.dropped_time_ns) / 1e9));
  put(d.ptr(), k.service, PyUnicode_FromStringAndSize("", 0));
  put_borrowed(d.ptr(), k.kind, k.dropped);
  put(d.ptr(), k.count, PyLong_FromUnsignedLongLong(chunk.dropped));
  return d;
}

py::list new_list(std::size_t n) {
  auto l = py::reinterpret_steal<py::list>(PyList_New(static_cast<Py_ssize_t>(n)));
  if (!l) throw py::error_already_set();
  return l;
}

}  // namespace

py::list event_list(const EventChunk& chunk) {
  const std::size_t first = chunk.dropped > 0 ? 1 : 0;
  py::list out = new_list(first + chunk.items.size());
  if (first) PyList_SET_ITEM(out.ptr(), 0, dropped_dict(chunk).release().ptr());
  Names names(chunk);
  for (std::size_t i = 0; i < chunk.items.size(); ++i) {
    const auto& e = chunk.items[i];
    py::dict d = event_dict(chunk, e, names.get(e));
    PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(first + i), d.release().ptr());
  }
  return out;
}

py::tuple event_columns(const EventChunk& chunk) {
  const EventKeys& k = event_keys();
  std::size_t logs = 0;
  for (const auto& e : chunk.items) logs += e.kind == EngineEvent::Kind::log;
  // On an error the lists are dropped with null slots, which list_dealloc skips.
  py::list texts = new_list(logs), services = new_list(logs), streams = new_list(logs);
  auto times = py::reinterpret_steal<py::bytes>(
      PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(logs * sizeof(double))));
  if (!times) throw py::error_already_set();
  char* time_out = PyBytes_AS_STRING(times.ptr());
  py::list states;
  Names names(chunk);
  std::size_t i = 0;
  for (const auto& e : chunk.items) {
    if (e.kind != EngineEvent::Kind::log) {
      py::dict d = event_dict(chunk, e, names.get(e));
      put(d.ptr(), k.index, PyLong_FromSize_t(i));
      states.append(std::move(d));
      continue;
    }
    PyObject* line = decode(chunk.text(e));
    PyObject* name = names.get(e);
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
  }
  return py::make_tuple(std::move(texts), std::move(services), std::move(streams), std::move(times),
                        std::move(states), chunk.dropped);
}

}  // namespace corral::bindings
