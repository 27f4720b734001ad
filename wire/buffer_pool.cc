#include "scan/wire/buffer_pool.h"

#include <algorithm>
#include <map>
#include <utility>

namespace scan::wire {

BufferPool::BufferPool(std::size_t max_total_bytes, std::size_t min_bytes)
    : max_total_bytes_(max_total_bytes), min_bytes_(min_bytes) {}

BufferPool::~BufferPool() {
  // Buffers handed out and never given back are dropped too: their memory may be freed later,
  // when nobody tells the listener any more.
  notify_dropped(known_);
}

bool BufferPool::set_listener(std::shared_ptr<Listener> listener) {
  std::lock_guard<std::mutex> lock(mutex_);
  if (listener_ || !listener) return false;
  listener_ = std::move(listener);
  for (const std::string& buffer : buffers_) {
    known_.push_back({buffer.data(), buffer.capacity()});
    listener_->kept(buffer.data(), buffer.capacity());
  }
  return true;
}

std::string BufferPool::take(std::size_t bytes) {
  std::string buffer = take_for_overwrite(bytes);
  buffer.clear();
  return buffer;
}

std::string BufferPool::take_for_overwrite(std::size_t bytes) {
  if (bytes >= min_bytes_) {
    std::lock_guard<std::mutex> lock(mutex_);
    // Best fit: the smallest buffer that holds `bytes`, so large ones stay for large requests.
    auto best = buffers_.end();
    for (auto it = buffers_.begin(); it != buffers_.end(); ++it) {
      if (it->capacity() >= bytes &&
          (best == buffers_.end() || it->capacity() < best->capacity())) {
        best = it;
      }
    }
    if (best != buffers_.end()) {
      std::string buffer = std::move(*best);
      buffers_.erase(best);
      total_ -= buffer.capacity();
      return buffer;
    }
  }
  // Rounded up, so that requests a few bytes apart in size (the message's other fields) reuse
  // the same buffers.
  constexpr std::size_t kGranule = std::size_t{64} << 10;
  std::string buffer;
  buffer.reserve(bytes >= min_bytes_ ? (bytes + kGranule - 1) / kGranule * kGranule : bytes);
  return buffer;
}

void BufferPool::forget_locked(const std::string& buffer, std::vector<Range>* dropped) {
  for (auto it = known_.begin(); it != known_.end(); ++it) {
    if (it->data == buffer.data() && it->bytes == buffer.capacity()) {
      dropped->push_back(*it);
      known_.erase(it);
      return;
    }
  }
}

void BufferPool::notify_dropped(const std::vector<Range>& dropped) {
  if (dropped.empty()) return;
  std::shared_ptr<Listener> listener;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    listener = listener_;
  }
  for (const Range& range : dropped) listener->dropped(range.data, range.bytes);
}

namespace {
bool overlap(const BufferPool::Range& range, const char* data, std::size_t bytes) {
  const auto start = reinterpret_cast<std::uintptr_t>(range.data);
  const auto other = reinterpret_cast<std::uintptr_t>(data);
  return start < other + bytes && other < start + range.bytes;
}
}  // namespace

namespace {
// Powers of two: the sizes prefill() makes, and what take() rounds a request's need to.
int size_class(std::size_t bytes) {
  int size = 0;
  while (bytes >>= 1) ++size;
  return size;
}
}  // namespace

bool BufferPool::make_room_locked(std::size_t capacity, std::vector<Range>* dropped,
                                  std::vector<std::string>* evicted) {
  std::map<int, int> pooled_of_size;
  for (const std::string& buffer : buffers_) ++pooled_of_size[size_class(buffer.capacity())];
  const auto evict = [&](std::vector<std::string>::iterator buffer) {
    --pooled_of_size[size_class(buffer->capacity())];
    total_ -= buffer->capacity();
    forget_locked(*buffer, dropped);
    evicted->push_back(std::move(*buffer));
    buffers_.erase(buffer);
  };
  // A size that has its copies already: the returning buffer is what a burst added.
  if (pooled_of_size[size_class(capacity)] >= copies_per_size_) return false;
  // What bursts left beyond the copies of a size goes first, smallest first. A burst of requests
  // beyond a size's copies is served by larger buffers and fresh ones; once they are all back, the
  // fresh ones took the room the large ones need, and those large ones (16 and 64 MiB, prefilled
  // and paged in) were what got dropped, to be faulted in again by the next request of their size.
  while (total_ + capacity > max_total_bytes_) {
    auto surplus = buffers_.end();
    for (auto it = buffers_.begin(); it != buffers_.end(); ++it) {
      if (pooled_of_size[size_class(it->capacity())] > copies_per_size_ &&
          (surplus == buffers_.end() || it->capacity() < surplus->capacity())) {
        surplus = it;
      }
    }
    if (surplus == buffers_.end()) break;
    evict(surplus);
  }
  // Then smaller buffers make way for a larger one.
  while (total_ + capacity > max_total_bytes_) {
    const auto smallest = std::min_element(
        buffers_.begin(), buffers_.end(),
        [](const std::string& a, const std::string& b) { return a.capacity() < b.capacity(); });
    if (smallest == buffers_.end() || smallest->capacity() >= capacity) return false;
    evict(smallest);
  }
  return true;
}

void BufferPool::give(std::string buffer) {
  const std::size_t capacity = buffer.capacity();
  const char* const data = buffer.data();
  std::vector<Range> dropped;        // told to the listener before any of this memory is freed:
  std::vector<std::string> evicted;  // freed when this returns, after `dropped` was told
  {
    std::lock_guard<std::mutex> lock(mutex_);
    bool keep = capacity >= min_bytes_ && capacity <= max_total_bytes_;
    bool known = false;
    if (listener_) {
      for (auto it = known_.begin(); it != known_.end();) {
        if (it->data == data && it->bytes == capacity) {
          known = true;
          ++it;
        } else if (overlap(*it, data, capacity)) {
          // A known buffer was freed outside the pool and its memory is back in this one: forget
          // it, and do not keep this one (the listener may still hold the old memory registered).
          dropped.push_back(*it);
          it = known_.erase(it);
          keep = false;
        } else {
          ++it;
        }
      }
    }
    if (keep && total_ + capacity > max_total_bytes_) {
      keep = make_room_locked(capacity, &dropped, &evicted);
    }
    if (keep) {
      if (listener_ && !known) {
        known_.push_back({data, capacity});
        listener_->kept(data, capacity);
      }
      total_ += capacity;
      buffers_.push_back(std::move(buffer));
    } else if (known) {
      forget_locked(buffer, &dropped);
    }
  }
  notify_dropped(dropped);
  buffer = std::string();  // a buffer not kept is freed only now
}

std::size_t BufferPool::pooled_bytes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return total_;
}

std::size_t BufferPool::prefill(std::size_t max_bytes, int copies) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    copies_per_size_ = std::max(copies_per_size_, copies);
  }
  std::vector<std::size_t> sizes;
  for (std::size_t size = min_bytes_; size <= max_total_bytes_; size *= 2) {
    sizes.push_back(size);
    if (size >= max_bytes) break;
  }
  std::size_t added = 0;
  for (auto size = sizes.rbegin(); size != sizes.rend(); ++size) {
    for (int copy = 0; copy < copies; ++copy) {
      if (pooled_bytes() + *size > max_total_bytes_) break;
      std::string buffer;
      buffer.reserve(*size);
      // Zero-filled once: the pages are resident from now on (later requests overwrite them).
      buffer.resize(buffer.capacity());
      added += buffer.capacity();
      give(std::move(buffer));
    }
  }
  return added;
}

}  // namespace scan::wire
