// Survives a shared-memory object being truncated by its owner while the server maps it. Access to
// a page of a mapping that lies past the object's new end raises SIGBUS; for the ranges watched
// here, the handler puts a private zero page in place of the faulting one, counts the fault
// against the range, and lets the access go on. The request that was reading or writing finds the
// count changed and fails instead of returning garbage (scan_service.cc); any other SIGBUS keeps
// its default action (the process dies, as it would have).
#pragma once

#include <cstddef>
#include <cstdint>

namespace scan::server::shared_memory {

// The most ranges watched at once (the registry's region limit is capped to this).
inline constexpr int kMaxWatchedRanges = 1024;

// Installs the SIGBUS handler (idempotent, thread-safe). False when sigaction fails.
bool install_fault_guard();

// Starts watching [start, start + bytes): returns a slot to pass to the functions below, or -1
// when every slot is taken.
int watch_range(const void* start, std::size_t bytes);
// Stops watching; call before unmapping the range.
void unwatch_range(int slot);
// SIGBUS faults taken in the range so far.
std::uint64_t faults_in(int slot);

}  // namespace scan::server::shared_memory
