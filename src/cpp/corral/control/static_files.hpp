// The dashboard's files (index.html, app.js, style.css, ...), read once from the package
// directory the server is given and then served from memory. Serving from a map of names
// read at start-up means no request can name a path: there is nothing to traverse, no
// symlink to follow, and no file read on a request.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace corral::control {

struct StaticFile {
  std::string body;
  std::string content_type;
  std::string etag;  // a quoted hash of the body, for If-None-Match
};

// The regular files directly inside `dir` whose names are plain (letters, digits, '.', '-',
// '_', not starting with '.') and that are at most `max_bytes` long; symlinks and anything
// else are skipped. An empty or missing directory gives an empty map.
std::map<std::string, StaticFile> load_static_files(const std::string& dir, std::size_t max_bytes = 4u << 20);

// The Content-Type for a file name, by its extension; application/octet-stream otherwise.
std::string_view static_content_type(std::string_view name);

// Whether an If-None-Match header names `etag` ("*" matches any).
bool etag_matches(std::string_view if_none_match, std::string_view etag);

}  // namespace corral::control
