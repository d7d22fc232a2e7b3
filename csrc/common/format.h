#pragma once
// Numbers in error messages are formatted with std::to_string, not streamed: on one
// torch 2.11 build (the H100 machine) streaming an integer into c10::str's ostringstream
// from this module crashed, while strings stream fine.
#include <ATen/core/Tensor.h>

#include <string>

namespace sam2rl_fast {

inline std::string num(int64_t v) { return std::to_string(v); }

inline std::string shape(const at::Tensor& t) {
  std::string s = "[";
  for (int64_t i = 0; i < t.dim(); ++i) s += (i ? ", " : "") + std::to_string(t.size(i));
  return s + "]";
}

}  // namespace sam2rl_fast
