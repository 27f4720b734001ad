// scan-bench: load generator for scan-service (and, with --protocol tcp, for the raw TCP echo of
// bench/service that gives the floor). Closed loop keeps N requests in flight; open loop sends at a
// fixed rate and measures each latency from the request's scheduled time, so a slow server cannot
// hide its queueing by slowing the sender down (coordinated omission).
#include <arpa/inet.h>
#include <fmt/format.h>
#include <grpc/grpc.h>
#include <grpcpp/impl/codegen/client_callback.h>
#include <grpcpp/impl/rpc_method.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "bench_report.h"
#include "inference/grpc_service.pb.h"
#include "scan/client/scan_client.h"
#include "scan/client/shared_memory.h"
#include "scan/wire/byte_size.h"
#include "scan/wire/codec.h"
#include "scan/wire/dtype.h"

namespace {

using Clock = std::chrono::steady_clock;
using scan::bench::MixEntry;
using scan::bench::Sample;

constexpr const char* kUsage = R"(Usage: scan-bench --target HOST:PORT[,HOST:PORT...] [options]

Load:
  --concurrency N          closed loop: N requests in flight (default 1)
  --rate R[,R...]          open loop at R requests/s; several rates run one after another
  --max-in-flight N        open loop: most requests in flight (default 256)
  --duration S             measured seconds per run (default 10)
  --requests N             measure N requests instead of a duration
  --warmup S               unmeasured seconds before each run (default 1)
Requests:
  --bytes SIZE             tensor size, e.g. 4Ki, 1Mi (shape [SIZE/128/elem, 128], dim 0)
  --mix SIZE:W[,SIZE:W...] size distribution, e.g. 4Ki:9,1Mi:1 (weights are relative)
  --shape D0,D1,...        a fixed shape instead (with --dim, default -2)
  --dtype f32|f64|f16|bf16 (default f32)
  --backend auto|cpu|gpu   (default auto)
  --timeout-ms N           per-request deadline (default 60000)
Transport:
  --protocol grpc|grpc-stream|kserve|system-shm|tcp
                           grpc-stream: ScanStream calls; kserve: KServe v2 ModelInfer calls
                           (model cumprod) on the same port; system-shm: tensors and results in
                           POSIX shared memory registered once per in-flight slot (the server
                           must share this host and allow it); tcp: raw length-prefixed copy
                           against scan-bench-tcp-echo
  --chunk-bytes SIZE       grpc-stream chunk size (default 4Mi)
  --connections N          gRPC connections per target, requests spread over them in turn
                           (default 1: every request in flight shares one connection, as
                           threads of one client process do; N separate clients are N)
  --channel-arg NAME=INT   extra gRPC channel argument (repeatable)
  --retries                let the client library retry (off: every answer counts as sent)
  Several targets are used in turn (client-side round robin); a dns:/// target is balanced
  over every address it resolves to.
Output:
  --label TEXT             name of the run in reports
  --json FILE --csv FILE   write the summaries
  --plot PREFIX            PREFIX-cdf.png (and PREFIX-load.png for several rates), via gnuplot
  --quiet                  no live progress line
)";

struct Options {
  std::vector<std::string> targets;
  std::string protocol = "grpc";
  std::int64_t chunk_bytes = scan::client::kDefaultStreamChunkBytes;
  int concurrency = 1;
  int connections = 1;
  std::vector<double> rates;
  int max_in_flight = 256;
  double duration = 10;
  std::int64_t requests = 0;
  double warmup = 1;
  std::vector<MixEntry> mix{{std::int64_t{1} << 20, 1}};
  std::vector<std::int64_t> shape;
  int dim = -2;
  scan::kernels::DType dtype = scan::kernels::DType::kFloat32;
  scan::v1::BackendPreference backend = scan::v1::BACKEND_PREFERENCE_AUTO;
  int timeout_ms = 60000;
  scan::transport::ChannelArgs channel_args;
  std::string label, json, csv, plot;
  bool quiet = false;
  bool retries = false;
};

// One request kind: the message without its tensor bytes, and the bytes, shared by every send.
struct Payload {
  scan::v1::ScanRequest header;
  std::shared_ptr<const std::string> data;
  std::int64_t bytes = 0;
};

class Driver {
 public:
  virtual ~Driver() = default;
  using Done = std::function<void(Sample)>;
  // Starts one request from `slot` (0 <= slot < the run's slots); `done` receives its code,
  // backend and bytes. An asynchronous driver returns at once and calls `done` from another
  // thread; a synchronous one calls `done` before it returns.
  virtual void start(const Payload& payload, int slot, Done done) = 0;
  virtual bool asynchronous() const = 0;
};

// What one finished gRPC call counts as.
Sample sample_of(const grpc::Status& status, const scan::v1::ScanResponse& response,
                 std::int64_t bytes) {
  Sample sample;
  sample.bytes = bytes;
  sample.code = scan::client::status_code_name(status.error_code());
  if (status.ok()) {
    sample.backend = response.backend();
    sample.server_compute_us = static_cast<double>(response.timing().compute_us());
    if (static_cast<std::int64_t>(response.result().data().size()) != bytes) {
      sample.code = "SHORT_RESPONSE";
    }
  }
  return sample;
}

// gRPC through the callback API: calls in flight cost no thread each, so the load generator
// stays light next to the server it measures on the same cores.
class GrpcDriver final : public Driver {
 public:
  explicit GrpcDriver(const Options& options)
      : clients_(options.targets, options.channel_args), timeout_(options.timeout_ms) {}

  void start(const Payload& payload, int /*slot*/, Done done) override {
    const std::int64_t bytes = payload.bytes;
    clients_.next().StartScan(payload.header, payload.data, timeout_,
                              [done = std::move(done), bytes](const grpc::Status& status,
                                                              scan::v1::ScanResponse& response) {
                                done(sample_of(status, response, bytes));
                              });
  }
  bool asynchronous() const override { return true; }

 private:
  scan::client::RoundRobinClients clients_;
  std::chrono::milliseconds timeout_;
};

// KServe v2's ModelInfer on the same port: the payload's tensor as raw_input_contents (by
// reference, as Scan's driver sends it), the result parsed into a pooled buffer (as the client
// library parses Scan's), so that the two protocols are compared on equal terms.
class KServeDriver final : public Driver {
 public:
  KServeDriver(const Options& options, const std::vector<Payload>& payloads)
      : clients_(options.targets, options.channel_args),
        timeout_(options.timeout_ms),
        first_payload_(payloads.data()),
        buffers_(std::make_shared<scan::wire::BufferPool>(std::size_t{1} << 30)) {
    // A method registered with each channel, as generated stubs (and the client library's Scan)
    // do: an unregistered one costs gRPC a lookup of its path on every call.
    for (std::size_t index = 0; index < clients_.size(); ++index) {
      const auto& channel = clients_.next().channel();
      routes_.push_back({channel, std::make_unique<grpc::internal::RpcMethod>(
                                      "/inference.GRPCInferenceService/ModelInfer",
                                      grpc::internal::RpcMethod::NORMAL_RPC, channel)});
    }
    for (const Payload& payload : payloads) headers_.push_back(infer_header(payload));
  }

  void start(const Payload& payload, int /*slot*/, Done done) override {
    auto* call = new Call(std::move(done), payload.bytes, buffers_);
    if (timeout_.count() > 0) {
      call->context.set_deadline(std::chrono::system_clock::now() + timeout_);
    }
    call->request = scan::wire::encode_with_bytes_field(
        headers_[static_cast<std::size_t>(&payload - first_payload_)],
        inference::ModelInferRequest::kRawInputContentsFieldNumber, payload.data);
    const Route& route = routes_[next_route_++ % routes_.size()];
    grpc::internal::ClientCallbackUnaryFactory::Create<grpc::ByteBuffer, grpc::ByteBuffer>(
        route.channel.get(), *route.method, &call->context, &call->request, &call->response, call);
    call->StartCall();
  }
  bool asynchronous() const override { return true; }

 private:
  class Call final : public grpc::ClientUnaryReactor {
   public:
    Call(Done done, std::int64_t bytes, std::shared_ptr<scan::wire::BufferPool> buffers)
        : done_(std::move(done)), bytes_(bytes), buffers_(std::move(buffers)) {}

    grpc::ClientContext context;
    grpc::ByteBuffer request;
    grpc::ByteBuffer response;

    void OnDone(const grpc::Status& finished) override {
      inference::ModelInferResponse decoded;
      std::string result;
      int entries = 0;
      grpc::Status status = finished;
      if (status.ok()) {
        status =
            scan::wire::decode_repeated(&response, &decoded, decoded.mutable_raw_output_contents(),
                                        &result, buffers_.get(), &entries);
      }
      Sample sample;
      sample.bytes = bytes_;
      sample.code = scan::client::status_code_name(status.error_code());
      if (status.ok()) {
        const auto& parameters = decoded.parameters();
        if (const auto found = parameters.find("backend"); found != parameters.end()) {
          sample.backend = found->second.string_param();
        }
        if (const auto found = parameters.find("compute_us"); found != parameters.end()) {
          sample.server_compute_us = static_cast<double>(found->second.int64_param());
        }
        if (static_cast<std::int64_t>(result.size()) != bytes_) sample.code = "SHORT_RESPONSE";
      }
      buffers_->give(std::move(result));
      done_(std::move(sample));
      delete this;
    }

   private:
    Done done_;
    std::int64_t bytes_;
    std::shared_ptr<scan::wire::BufferPool> buffers_;
  };

  static inference::ModelInferRequest infer_header(const Payload& payload) {
    const scan::v1::ScanRequest& scan = payload.header;
    inference::ModelInferRequest infer;
    infer.set_model_name("cumprod");
    auto* input = infer.add_inputs();
    input->set_name("gamma");
    static const char* const kDatatypes[] = {"", "FP32", "FP64", "FP16", "BF16"};
    input->set_datatype(kDatatypes[scan.gamma().dtype()]);
    *input->mutable_shape() = scan.gamma().shape();
    (*infer.mutable_parameters())["dim"].set_int64_param(scan.dim());
    static const char* const kBackends[] = {"auto", "cpu", "gpu"};
    (*infer.mutable_parameters())["backend"].set_string_param(kBackends[scan.backend()]);
    return infer;
  }

  struct Route {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<grpc::internal::RpcMethod> method;
  };

  scan::client::RoundRobinClients clients_;
  std::chrono::milliseconds timeout_;
  const Payload* first_payload_;
  std::vector<inference::ModelInferRequest> headers_;  // by payload, built once
  std::vector<Route> routes_;
  std::atomic<std::size_t> next_route_{0};
  std::shared_ptr<scan::wire::BufferPool> buffers_;
};

// ScanStream, synchronously: a thread per call in flight, which is nothing next to the tensors
// streams are for.
class GrpcStreamDriver final : public Driver {
 public:
  explicit GrpcStreamDriver(const Options& options)
      : clients_(options.targets, options.channel_args),
        timeout_(options.timeout_ms),
        chunk_bytes_(static_cast<std::size_t>(options.chunk_bytes)) {}

  void start(const Payload& payload, int /*slot*/, Done done) override {
    scan::v1::ScanResponse response;
    std::chrono::microseconds round_trip{0};
    const grpc::Status status = clients_.next().ScanStream(
        payload.header, payload.data, chunk_bytes_, timeout_, &response, &round_trip);
    done(sample_of(status, response, payload.bytes));
  }
  bool asynchronous() const override { return false; }

 private:
  scan::client::RoundRobinClients clients_;
  std::chrono::milliseconds timeout_;
  std::size_t chunk_bytes_;
};

// System shared memory: every slot has a region of its own holding each payload's tensor and
// room for its result, registered once before the run; requests then carry references only, so
// one run measures what a client on the server's host pays per scan beyond the kernel.
class SharedMemoryDriver final : public Driver {
 public:
  SharedMemoryDriver(const Options& options, const std::vector<Payload>& payloads, int slots)
      : clients_(options.targets, options.channel_args),
        timeout_(options.timeout_ms),
        first_payload_(payloads.data()) {
    std::int64_t region_bytes = 0;
    for (const Payload& payload : payloads) {
      offsets_.push_back(region_bytes);
      region_bytes += 2 * align(payload.bytes);
    }
    for (int slot = 0; slot < slots; ++slot) {
      Slot made;
      made.client = &clients_.next();
      made.region = scan::client::SystemSharedMemory::create(
          scan::client::SystemSharedMemory::unique_key("bench"),
          static_cast<std::size_t>(region_bytes), &error_);
      if (made.region == nullptr) return;
      made.name = made.region->key().substr(1);
      for (std::size_t index = 0; index < payloads.size(); ++index) {
        std::memcpy(made.region->data() + offsets_[index], payloads[index].data->data(),
                    static_cast<std::size_t>(payloads[index].bytes));
      }
      scan::v1::RegisterSharedMemoryRequest request;
      request.set_name(made.name);
      request.set_kind(scan::v1::SHARED_MEMORY_KIND_SYSTEM);
      request.set_key(made.region->key());
      request.set_byte_size(region_bytes);
      const grpc::Status status = made.client->RegisterSharedMemory(request);
      if (!status.ok()) {
        error_ = "RegisterSharedMemory: " + status.error_message();
        return;
      }
      slots_.push_back(std::move(made));
    }
  }
  ~SharedMemoryDriver() override {
    for (Slot& slot : slots_) slot.client->UnregisterSharedMemory(slot.name);
  }
  const std::string& error() const { return error_; }

  void start(const Payload& payload, int slot, Done done) override {
    const Slot& mine = slots_[static_cast<std::size_t>(slot) % slots_.size()];
    scan::v1::ScanRequest request = payload.header;
    const std::int64_t offset = offset_of(payload);
    *request.mutable_gamma()->mutable_shared_memory() =
        scan::client::shared_memory_reference(mine.name, offset, payload.bytes);
    *request.mutable_output() = scan::client::shared_memory_reference(
        mine.name, offset + align(payload.bytes), payload.bytes);
    const std::int64_t bytes = payload.bytes;
    mine.client->StartScan(request, empty_, timeout_,
                           [done = std::move(done), bytes](const grpc::Status& status,
                                                           scan::v1::ScanResponse& response) {
                             Sample sample = sample_of(status, response, bytes);
                             if (sample.code == "SHORT_RESPONSE" &&
                                 response.result().shared_memory().byte_size() == bytes) {
                               sample.code = "OK";  // the result is in the region
                             }
                             done(std::move(sample));
                           });
  }
  bool asynchronous() const override { return true; }

 private:
  struct Slot {
    scan::client::Client* client = nullptr;
    std::unique_ptr<scan::client::SystemSharedMemory> region;
    std::string name;
  };

  static std::int64_t align(std::int64_t bytes) { return (bytes + 63) / 64 * 64; }
  // Payloads are identified by address: they live in one vector for the whole run.
  std::int64_t offset_of(const Payload& payload) const {
    return offsets_[static_cast<std::size_t>(&payload - first_payload_)];
  }

  scan::client::RoundRobinClients clients_;
  std::chrono::milliseconds timeout_;
  const Payload* first_payload_;
  std::vector<std::int64_t> offsets_;
  std::vector<Slot> slots_;
  std::shared_ptr<const std::string> empty_ = std::make_shared<const std::string>();
  std::string error_;
};

// Raw TCP: an 8-byte little-endian length, then the bytes; the echo server answers the same way
// once it holds the whole message (store and forward, as a unary RPC does).
class TcpDriver final : public Driver {
 public:
  TcpDriver(const Options& options, int workers) : targets_(options.targets), sockets_(workers) {}
  ~TcpDriver() override {
    for (auto& socket : sockets_) {
      if (socket.fd >= 0) close(socket.fd);
    }
  }

  bool asynchronous() const override { return false; }

  void start(const Payload& payload, int slot, Done done) override {
    Sample sample;
    call(payload, sockets_[slot], slot, &sample);
    done(std::move(sample));
  }

 private:
  struct Socket {
    int fd = -1;
    std::string buffer;
  };

  void call(const Payload& payload, Socket& socket, int slot, Sample* sample) {
    sample->bytes = payload.bytes;
    if (socket.fd < 0) socket.fd = connect_to(targets_[slot % targets_.size()]);
    std::uint64_t length = payload.data->size();
    iovec out[2] = {{&length, sizeof length},
                    {const_cast<char*>(payload.data->data()), payload.data->size()}};
    std::uint64_t answer_length = 0;
    if (socket.fd < 0 || !send_all(socket.fd, out, 2) ||
        !recv_all(socket.fd, &answer_length, sizeof answer_length) || answer_length != length) {
      sample->code = "UNAVAILABLE";
      return;
    }
    socket.buffer.resize(answer_length);
    sample->code = recv_all(socket.fd, socket.buffer.data(), answer_length) ? "OK" : "UNAVAILABLE";
    sample->backend = "tcp";
  }

  static int connect_to(const std::string& target) {
    const auto colon = target.rfind(':');
    if (colon == std::string::npos) return -1;
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    if (getaddrinfo(target.substr(0, colon).c_str(), target.substr(colon + 1).c_str(), &hints,
                    &found) != 0) {
      return -1;
    }
    int fd = socket(found->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
      close(fd);
      fd = -1;
    }
    freeaddrinfo(found);
    const int one = 1;
    if (fd >= 0) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  }

  static bool send_all(int fd, iovec* parts, int count) {
    while (count > 0) {
      const ssize_t sent = writev(fd, parts, count);
      if (sent < 0 && errno == EINTR) continue;
      if (sent <= 0) return false;
      auto left = static_cast<std::size_t>(sent);
      while (count > 0 && left >= parts->iov_len) {
        left -= parts->iov_len;
        ++parts;
        --count;
      }
      if (count > 0) {
        parts->iov_base = static_cast<char*>(parts->iov_base) + left;
        parts->iov_len -= left;
      }
    }
    return true;
  }

  static bool recv_all(int fd, void* data, std::size_t size) {
    auto* at = static_cast<char*>(data);
    while (size > 0) {
      const ssize_t got = recv(fd, at, size, 0);
      if (got < 0 && errno == EINTR) continue;
      if (got <= 0) return false;
      at += got;
      size -= static_cast<std::size_t>(got);
    }
    return true;
  }

  std::vector<std::string> targets_;
  std::vector<Socket> sockets_;
};

std::vector<Payload> make_payloads(const Options& options) {
  std::vector<Payload> payloads;
  const auto element = static_cast<std::int64_t>(scan::kernels::element_size(options.dtype));
  std::uint64_t seed = 1;
  auto add = [&](std::vector<std::int64_t> shape, int dim) {
    auto gamma = scan::client::random_gamma(options.dtype, shape, 0.5, 1.0, seed++);
    Payload payload;
    auto* tensor = payload.header.mutable_gamma();
    tensor->set_dtype(scan::v1::to_wire_dtype(options.dtype));
    tensor->mutable_shape()->Add(shape.begin(), shape.end());
    payload.header.set_dim(dim);
    payload.header.set_backend(options.backend);
    payload.bytes = static_cast<std::int64_t>(gamma.data.size());
    payload.data = std::make_shared<const std::string>(std::move(gamma.data));
    payloads.push_back(std::move(payload));
  };
  if (!options.shape.empty()) {
    add(options.shape, options.dim);
    return payloads;
  }
  for (const MixEntry& entry : options.mix) {
    // Rows of 128 elements scanned along the rows: the [seq_len, head_dim] layout of a decay
    // tensor, so the service sees the strided scan it serves in practice.
    const std::int64_t elements = std::max<std::int64_t>(1, entry.bytes / element);
    if (elements % 128 == 0) {
      add({elements / 128, 128}, 0);
    } else {
      add({elements}, 0);
    }
  }
  return payloads;
}

// Collects the samples of one run from any thread and prints the live progress line.
class Recorder {
 public:
  explicit Recorder(Clock::time_point measure_from) : measure_from_(measure_from) {}

  void add(Sample sample, Clock::time_point due) {
    // Open loop: from the scheduled time, so time spent waiting for a free slot counts.
    sample.latency_us = std::chrono::duration<double, std::micro>(Clock::now() - due).count();
    if (due < measure_from_) return;
    std::lock_guard<std::mutex> lock(mutex_);
    if (sample.code == "OK") {
      interval_.push_back(sample.latency_us);
    } else {
      ++errors_;
    }
    samples_.push_back(std::move(sample));
  }

  std::string progress_line(double elapsed) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto count = static_cast<std::int64_t>(samples_.size());
    const auto p = scan::bench::percentiles(&interval_);
    const double seconds = elapsed - last_elapsed_;
    std::string text = fmt::format(
        "\r{:6.1f}s  ok {:8}  errors {:5}  {:9.1f} req/s  p50 {:8.3f} ms  p99 {:8.3f} ms", elapsed,
        count - errors_, errors_, seconds > 0 ? p.count / seconds : 0.0, p.p50_us / 1000,
        p.p99_us / 1000);
    interval_.clear();
    last_elapsed_ = elapsed;
    return text;
  }

  std::vector<Sample> take() {
    std::lock_guard<std::mutex> lock(mutex_);
    return std::move(samples_);
  }

 private:
  const Clock::time_point measure_from_;
  std::mutex mutex_;
  std::vector<Sample> samples_;
  std::int64_t errors_ = 0;
  std::vector<double> interval_;
  double last_elapsed_ = 0;
};

Clock::duration seconds(double value) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(value));
}

// One run at one load level: closed loop when rate is 0, open loop at `rate` otherwise.
class LoadRun {
 public:
  LoadRun(const Options& options, double rate, Driver& driver, const std::vector<Payload>& payloads)
      : options_(options),
        rate_(rate),
        slots_(rate > 0 ? options.max_in_flight : options.concurrency),
        driver_(driver),
        payloads_(payloads),
        start_(Clock::now()),
        measure_from_(start_ + seconds(options.warmup)),
        recorder_(measure_from_) {
    if (options.requests == 0) {
      measure_until_ = measure_from_ + seconds(options.duration);
    } else if (rate > 0) {
      measure_until_ = measure_from_ + seconds(options.requests / rate);
    }
    std::vector<double> weights;
    for (const auto& entry : options.mix) weights.push_back(entry.weight);
    if (!options.shape.empty()) weights = {1.0};
    pick_ = std::discrete_distribution<std::size_t>(weights.begin(), weights.end());
    for (int slot = 0; slot < slots_; ++slot) random_.emplace_back(slot + 1);
  }

  scan::bench::RunSummary run() {
    std::thread reporter([this] { report_progress(); });
    if (!driver_.asynchronous()) {
      run_threads();
    } else if (rate_ > 0) {
      run_open();
    } else {
      run_closed();
    }
    const double measured = std::chrono::duration<double>(Clock::now() - measure_from_).count();
    finished_ = true;
    reporter.join();
    if (!options_.quiet) std::fputs("\n", stderr);

    auto summary = scan::bench::summarize(recorder_.take(), measured);
    summary.mode = rate_ > 0 ? "open" : "closed";
    summary.offered_rate = rate_;
    summary.concurrency = slots_;
    summary.connections = options_.connections;
    summary.label = options_.label;
    if (rate_ > 0 && options_.rates.size() > 1) summary.label += fmt::format("@{}", rate_);
    return summary;
  }

 private:
  const Payload& pick(int slot) { return payloads_[pick_(random_[slot])]; }

  // When the request due at `due` should not be sent: the run is over.
  bool over(Clock::time_point due) {
    if (due >= measure_until_) return true;
    return rate_ == 0 && options_.requests > 0 && due >= measure_from_ &&
           measured_started_.fetch_add(1) >= options_.requests;
  }

  Clock::time_point arrival(std::int64_t index) const { return start_ + seconds(index / rate_); }

  // Synchronous drivers: one thread per slot, each sending its next request when the last is
  // done (closed) or taking the next arrival (open).
  void run_threads() {
    std::vector<std::thread> threads;
    for (int slot = 0; slot < slots_; ++slot) {
      threads.emplace_back([this, slot] {
        while (true) {
          Clock::time_point due = Clock::now();
          if (rate_ > 0) {
            due = arrival(next_arrival_.fetch_add(1));
            if (due >= measure_until_) break;
            std::this_thread::sleep_until(due);
          } else if (over(due)) {
            break;
          }
          driver_.start(pick(slot), slot,
                        [this, due](Sample sample) { recorder_.add(std::move(sample), due); });
        }
      });
    }
    for (auto& thread : threads) thread.join();
  }

  // Asynchronous closed loop: each completion sends that slot's next request.
  void run_closed() {
    in_flight_ = slots_;
    for (int slot = 0; slot < slots_; ++slot) send_closed(slot);
    wait_until_idle();
  }

  void send_closed(int slot) {
    const auto due = Clock::now();
    if (over(due)) {
      slot_finished();
      return;
    }
    driver_.start(pick(slot), slot, [this, slot, due](Sample sample) {
      recorder_.add(std::move(sample), due);
      send_closed(slot);
    });
  }

  // Asynchronous open loop: this thread sends at the scheduled times, waiting only when
  // max_in_flight requests are out (their latency still counts from the schedule).
  void run_open() {
    for (std::int64_t index = 0;; ++index) {
      const auto due = arrival(index);
      if (due >= measure_until_) break;
      std::this_thread::sleep_until(due);
      {
        std::unique_lock<std::mutex> lock(mutex_);
        changed_.wait(lock, [this] { return in_flight_ < slots_; });
        ++in_flight_;
      }
      driver_.start(pick(0), 0, [this, due](Sample sample) {
        recorder_.add(std::move(sample), due);
        slot_finished();
      });
    }
    wait_until_idle();
  }

  void slot_finished() {
    std::lock_guard<std::mutex> lock(mutex_);
    --in_flight_;
    changed_.notify_all();
  }

  void wait_until_idle() {
    std::unique_lock<std::mutex> lock(mutex_);
    changed_.wait(lock, [this] { return in_flight_ == 0; });
  }

  void report_progress() {
    auto last = Clock::now();
    while (!finished_) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      const auto now = Clock::now();
      if (!options_.quiet && now >= measure_from_ && now - last >= std::chrono::seconds(1)) {
        last = now;
        const double elapsed = std::chrono::duration<double>(now - measure_from_).count();
        std::fputs(recorder_.progress_line(elapsed).c_str(), stderr);
      }
    }
  }

  const Options& options_;
  const double rate_;
  const int slots_;
  Driver& driver_;
  const std::vector<Payload>& payloads_;
  const Clock::time_point start_;
  const Clock::time_point measure_from_;
  Clock::time_point measure_until_ = Clock::time_point::max();
  Recorder recorder_;
  std::discrete_distribution<std::size_t> pick_;
  std::vector<std::mt19937_64> random_;
  std::atomic<std::int64_t> next_arrival_{0}, measured_started_{0};
  std::atomic<bool> finished_{false};
  std::mutex mutex_;
  std::condition_variable changed_;
  int in_flight_ = 0;
};

void print_summary(const scan::bench::RunSummary& run) {
  const auto& p = run.latency;
  std::printf(
      "%s%s %s loop, %d %s: %.2f s, %lld ok, %lld errors, %.1f req/s, %.2f MB/s payload\n"
      "  latency ms: mean %.3f  p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f\n",
      run.label.c_str(), run.label.empty() ? "" : ":", run.mode.c_str(), run.concurrency,
      run.mode == "open" ? "most in flight" : "in flight", run.seconds,
      static_cast<long long>(run.ok), static_cast<long long>(run.errors), run.throughput_rps,
      run.payload_mbps, p.mean_us / 1000, p.p50_us / 1000, p.p90_us / 1000, p.p99_us / 1000,
      p.p999_us / 1000, p.max_us / 1000);
  if (run.server_compute.count > 0) {
    std::printf("  server compute ms: p50 %.3f  p99 %.3f\n", run.server_compute.p50_us / 1000,
                run.server_compute.p99_us / 1000);
  }
  for (const auto& [code, count] : run.codes) {
    std::printf("  status %-20s %lld\n", code.c_str(), static_cast<long long>(count));
  }
  for (const auto& [backend, latency] : run.backends) {
    std::printf("  backend %-12s %lld ok, p50 %.3f ms, p99 %.3f ms\n", backend.c_str(),
                static_cast<long long>(latency.count), latency.p50_us / 1000,
                latency.p99_us / 1000);
  }
}

bool write_file(const std::string& path, const std::string& text) {
  std::ofstream file(path);
  file << text;
  return static_cast<bool>(file);
}

int usage_error(const std::string& message) {
  std::fprintf(stderr, "scan-bench: %s\n%s", message.c_str(), kUsage);
  return 2;
}

bool parse_number(const std::string& text, double* value) {
  char* end = nullptr;
  *value = std::strtod(text.c_str(), &end);
  return !text.empty() && *end == '\0';
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  std::string command_line = "scan-bench";
  for (int index = 1; index < argc; ++index) command_line += std::string(" ") + argv[index];

  for (int index = 1; index < argc; ++index) {
    const std::string arg = argv[index];
    if (arg == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (arg == "--quiet" || arg == "--retries") {
      (arg == "--quiet" ? options.quiet : options.retries) = true;
      continue;
    }
    if (index + 1 >= argc) return usage_error("missing value for " + arg);
    const std::string value = argv[++index];
    double number = 0;
    const bool numeric = parse_number(value, &number);
    bool ok = true;
    if (arg == "--target") {
      options.targets = scan::client::split_targets(value);
      ok = !options.targets.empty();
    } else if (arg == "--protocol") {
      options.protocol = value;
      ok = value == "grpc" || value == "grpc-stream" || value == "kserve" ||
           value == "system-shm" || value == "tcp";
    } else if (arg == "--chunk-bytes") {
      ok = scan::wire::parse_byte_size(value, &options.chunk_bytes) && options.chunk_bytes > 0;
    } else if (arg == "--concurrency") {
      options.concurrency = static_cast<int>(number);
      ok = numeric && number >= 1;
    } else if (arg == "--rate") {
      for (const auto& part : scan::client::split_targets(value)) {
        double rate = 0;
        ok = ok && parse_number(part, &rate) && rate > 0;
        options.rates.push_back(rate);
      }
      ok = ok && !options.rates.empty();
    } else if (arg == "--max-in-flight") {
      options.max_in_flight = static_cast<int>(number);
      ok = numeric && number >= 1;
    } else if (arg == "--duration") {
      options.duration = number;
      ok = numeric && number > 0;
    } else if (arg == "--requests") {
      options.requests = static_cast<std::int64_t>(number);
      ok = numeric && number >= 1;
    } else if (arg == "--warmup") {
      options.warmup = number;
      ok = numeric && number >= 0;
    } else if (arg == "--bytes" || arg == "--mix") {
      ok = scan::bench::parse_mix(value, &options.mix) &&
           (arg == "--mix" || options.mix.size() == 1);
    } else if (arg == "--shape") {
      options.shape.clear();
      for (const auto& part : scan::client::split_targets(value)) {
        double size = 0;
        ok = ok && parse_number(part, &size) && size >= 0;
        options.shape.push_back(static_cast<std::int64_t>(size));
      }
      ok = ok && !options.shape.empty();
    } else if (arg == "--dim") {
      options.dim = static_cast<int>(number);
      ok = numeric;
    } else if (arg == "--dtype") {
      ok = scan::client::parse_dtype(value, &options.dtype);
    } else if (arg == "--backend") {
      static const std::map<std::string, scan::v1::BackendPreference> kBackends = {
          {"auto", scan::v1::BACKEND_PREFERENCE_AUTO},
          {"cpu", scan::v1::BACKEND_PREFERENCE_CPU},
          {"gpu", scan::v1::BACKEND_PREFERENCE_GPU}};
      const auto found = kBackends.find(value);
      ok = found != kBackends.end();
      if (ok) options.backend = found->second;
    } else if (arg == "--timeout-ms") {
      options.timeout_ms = static_cast<int>(number);
      ok = numeric && number > 0;
    } else if (arg == "--connections") {
      options.connections = static_cast<int>(number);
      ok = numeric && number >= 1 && number <= 1024;
    } else if (arg == "--channel-arg") {
      ok = scan::transport::parse_channel_arg(value, &options.channel_args);
    } else if (arg == "--label") {
      options.label = value;
    } else if (arg == "--json") {
      options.json = value;
    } else if (arg == "--csv") {
      options.csv = value;
    } else if (arg == "--plot") {
      options.plot = value;
    } else {
      return usage_error("unknown option " + arg);
    }
    if (!ok) return usage_error("bad value '" + value + "' for " + arg);
  }
  if (options.targets.empty()) return usage_error("--target is required");
  if (options.connections > 1) {
    std::vector<std::string> spread;
    for (int copy = 0; copy < options.connections; ++copy) {
      spread.insert(spread.end(), options.targets.begin(), options.targets.end());
    }
    options.targets = std::move(spread);
    // Channels to one target otherwise share a connection through gRPC's global subchannel pool.
    options.channel_args.push_back({GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1});
  }
  // The client library retries refusals (RESOURCE_EXHAUSTED, UNAVAILABLE) on its own; a load
  // generator must see them, and must not send more than it reports.
  if (!options.retries) {
    options.channel_args.insert(options.channel_args.begin(), {GRPC_ARG_ENABLE_RETRIES, 0});
  }

  scan::transport::keep_buffers_on_heap();
  const auto payloads = make_payloads(options);
  const int workers = options.rates.empty() ? options.concurrency : options.max_in_flight;
  std::unique_ptr<Driver> driver;
  if (options.protocol == "tcp") {
    driver = std::make_unique<TcpDriver>(options, workers);
  } else if (options.protocol == "grpc-stream") {
    driver = std::make_unique<GrpcStreamDriver>(options);
  } else if (options.protocol == "kserve") {
    driver = std::make_unique<KServeDriver>(options, payloads);
  } else if (options.protocol == "system-shm") {
    auto shared = std::make_unique<SharedMemoryDriver>(options, payloads, workers);
    if (!shared->error().empty()) {
      std::fprintf(stderr, "scan-bench: --protocol system-shm: %s\n", shared->error().c_str());
      return 1;
    }
    driver = std::move(shared);
  } else {
    driver = std::make_unique<GrpcDriver>(options);
  }

  std::vector<scan::bench::RunSummary> runs;
  if (options.rates.empty()) {
    runs.push_back(LoadRun(options, 0, *driver, payloads).run());
  } else {
    for (const double rate : options.rates) {
      runs.push_back(LoadRun(options, rate, *driver, payloads).run());
    }
  }
  for (const auto& run : runs) print_summary(run);

  if (!options.json.empty() &&
      !write_file(options.json, scan::bench::to_json(runs, command_line))) {
    std::fprintf(stderr, "scan-bench: cannot write %s\n", options.json.c_str());
    return 2;
  }
  if (!options.csv.empty() && !write_file(options.csv, scan::bench::to_csv(runs))) {
    std::fprintf(stderr, "scan-bench: cannot write %s\n", options.csv.c_str());
    return 2;
  }
  if (!options.plot.empty()) {
    std::string error;
    const std::string script = options.plot + ".gnuplot";
    if (!scan::bench::write_plot_data(runs, options.plot, &error) ||
        !write_file(script, scan::bench::gnuplot_script(runs, options.plot))) {
      std::fprintf(stderr, "scan-bench: %s\n", error.empty() ? "cannot write plot" : error.c_str());
      return 2;
    }
    if (std::system(("gnuplot '" + script + "'").c_str()) != 0) {
      std::fprintf(stderr, "scan-bench: gnuplot failed on %s (is gnuplot-nox installed?)\n",
                   script.c_str());
      return 2;
    }
  }
  std::int64_t ok = 0;
  for (const auto& run : runs) ok += run.ok;
  return ok > 0 ? 0 : 1;
}
