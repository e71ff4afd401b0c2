// src/sandbox/contract.json, compiled in (see cmake/embed_catalogue.cmake).
#pragma once
#include <string_view>

namespace stsync::sandbox {
std::string_view embedded_contract_json();
}
