// Composition of the service's compute: which backends this build and machine offer, how many
// requests each runs at once, and their cost models (calibrated or configured). The only file that
// knows which backends exist and the only CUDA conditional of the server; everything above it sees
// a Router and plain data.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "app/config.h"
#include "routing/router.h"
#include "scan/kernels/gpu_inventory.h"
#include "scan/wire/buffer_pool.h"
#include "shared_memory/region_registry.h"

namespace scan::server {

// A router with its backends, and what startup found out about GPUs (for GetServerInfo and the
// logs; not used for routing decisions).
struct ServingBackends {
  std::unique_ptr<Router> router;
  kernels::GpuInventory gpus;
};

// The backends for `config`: cpu-native and/or cpu-torch (--cpu-backend), and a cuda:N backend per
// usable GPU (builds with CUDA, --gpu=auto); calibrated when there is a choice, then --cost-model
// overrides applied.
ServingBackends compose_backends(const ServerConfig& config);

// --gpu-register-pool: a listener that registers the wire pool's buffers with CUDA while pooled, so
// GPU jobs DMA straight from the request and into the response. Null in builds without CUDA.
std::shared_ptr<wire::BufferPool::Listener> make_gpu_pool_registrar();

// Hooks that register clients' shared-memory mappings with CUDA (as the pool registrar does for
// the pool's buffers), so GPU jobs copy straight from and into them. Empty without CUDA.
shared_memory::MappingHooks make_gpu_mapping_hooks();
// How to open a client's CUDA IPC handle on one of this process's GPUs (for CUDA regions). Empty
// without CUDA.
std::function<bool(const std::string&, int, shared_memory::DeviceMapping*, std::string*)>
make_cuda_ipc_opener();

// Waits until every buffer handed to a registrar so far is registered with CUDA (registration
// runs in the background); returns at once in builds without CUDA.
void wait_gpu_pool_registered();

}  // namespace scan::server
