// Tensor buffers reused across calls, with a listener for their memory (the server's CUDA
// backend registers pooled buffers with the driver). Shared by the server, its clients and the
// bench echo server.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace scan::wire {

// Keeps large tensor buffers alive between requests. A fresh buffer of tens of MiB comes from mmap
// and is page-faulted in (and zeroed by the kernel) on every request; glibc stops recycling heap
// blocks above 32 MiB, where this costs more than the loopback transfer itself (bench/RESULTS.md).
// Thread-safe; hand it around as a shared_ptr, since slices in flight may outlive its user.
class BufferPool {
 public:
  // Told about the memory of pooled buffers, e.g. to register it with a GPU driver once (the
  // server's CUDA backend DMAs straight from and into registered memory). A buffer is "known" from
  // its first entry into the pool until it leaves the pool for good: kept() is called once, when it
  // first enters (with the pool's lock held: keep it quick, hand slow work to another thread), and
  // dropped() once, before its memory is freed (without the lock; it may block, e.g. until the
  // memory is unregistered). A known buffer that take() hands out stays known: it must come back
  // through give() (as every user in this project does), not be freed elsewhere. `data` and `bytes`
  // are the buffer's data() and capacity().
  class Listener {
   public:
    virtual ~Listener() = default;
    virtual void kept(const void* data, std::size_t bytes) = 0;
    virtual void dropped(const void* data, std::size_t bytes) = 0;
  };

  // Keeps buffers of at least `min_bytes` capacity, at most `max_total_bytes` of them in all.
  explicit BufferPool(std::size_t max_total_bytes, std::size_t min_bytes = std::size_t{1} << 20);
  // Every known buffer is dropped (the listener's last calls).
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // Sets the listener (once; false if one is set already). Buffers pooled already are kept() now.
  bool set_listener(std::shared_ptr<Listener> listener);

  // An empty string whose capacity is at least `bytes` if the pool has one, else a new one (of
  // `bytes` rounded up to 64 KiB when it may be pooled).
  std::string take(std::size_t bytes);
  // The same buffer, but as it was given back: same size, old bytes. For outputs that are
  // overwritten in full: resize() within the old size then writes nothing, where take()'s empty
  // string would have every byte zero-filled first (25 ms for 256 MiB, as long as the scan).
  std::string take_for_overwrite(std::size_t bytes);
  // Returns a buffer; kept if large enough and there is room. When the pool is full, a buffer of a
  // size (power of two) with fewer than its copies pooled is kept in place of others: first those
  // beyond the copies of their size, then smaller ones. Copies: 2, or prefill()'s if more.
  void give(std::string buffer);
  // Fills the pool ahead of traffic with `copies` buffers of each power of two from the pool's
  // minimum up to the first that holds `max_bytes`, each paged in (written once), largest first
  // so that what does not fit in the pool's limit is the small ones. A request of any size then
  // finds a buffer at most twice its size that the kernel has already faulted in (and that the
  // listener, told as they enter, has registered): the first request of a size costs what later
  // ones do. Returns the bytes added.
  std::size_t prefill(std::size_t max_bytes, int copies);
  std::size_t pooled_bytes() const;

  struct Range {
    const char* data;
    std::size_t bytes;
  };

 private:
  // Forgets `buffer` if known (appending it to `dropped`); call with the lock held.
  void forget_locked(const std::string& buffer, std::vector<Range>* dropped);
  void notify_dropped(const std::vector<Range>& dropped);
  // Evicts pooled buffers until `capacity` more bytes fit (see give()); false, with the pool as it
  // may be left by then, when the returning buffer is not to be kept.
  bool make_room_locked(std::size_t capacity, std::vector<Range>* dropped,
                        std::vector<std::string>* evicted);

  const std::size_t max_total_bytes_;
  const std::size_t min_bytes_;
  mutable std::mutex mutex_;
  std::vector<std::string> buffers_;
  std::size_t total_ = 0;
  int copies_per_size_ = 2;
  std::shared_ptr<Listener> listener_;
  std::vector<Range> known_;  // with a listener: every known buffer, pooled or handed out
};

// A buffer of a pool's that goes back to the pool when this is destroyed (or freed without one).
class PooledBuffer {
 public:
  // A buffer with capacity for `bytes` from `pool` (may be null), empty.
  PooledBuffer(std::shared_ptr<BufferPool> pool, std::size_t bytes)
      : pool_(std::move(pool)), bytes_(pool_ ? pool_->take(bytes) : std::string()) {
    if (!pool_) bytes_.reserve(bytes);
  }
  // A buffer of exactly `bytes`, with whatever bytes it held before (see take_for_overwrite).
  static std::shared_ptr<PooledBuffer> for_overwrite(std::shared_ptr<BufferPool> pool,
                                                     std::size_t bytes) {
    auto buffer = std::make_shared<PooledBuffer>(pool, pool->take_for_overwrite(bytes));
    buffer->bytes_.resize(bytes);
    return buffer;
  }
  // Takes over `bytes`, to be given to `pool` in the end.
  PooledBuffer(std::shared_ptr<BufferPool> pool, std::string bytes)
      : pool_(std::move(pool)), bytes_(std::move(bytes)) {}
  ~PooledBuffer() {
    if (pool_) pool_->give(std::move(bytes_));
  }
  PooledBuffer(const PooledBuffer&) = delete;
  PooledBuffer& operator=(const PooledBuffer&) = delete;

  std::string& bytes() { return bytes_; }
  const std::string& bytes() const { return bytes_; }

 private:
  std::shared_ptr<BufferPool> pool_;
  std::string bytes_;
};

}  // namespace scan::wire
