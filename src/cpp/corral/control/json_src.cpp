// Boost.JSON used header-only: its implementation is compiled here, in this file alone.
#include <boost/json/src.hpp>
