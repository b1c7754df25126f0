// Small string helpers shared by the command line and the config loader.
#pragma once
#include <cstddef>
#include <string>

namespace ipsnet {

/// Levenshtein distance (insertions, deletions, substitutions), for "did you mean" suggestions.
size_t edit_distance(const std::string& a, const std::string& b);

}  // namespace ipsnet
