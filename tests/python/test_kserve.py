"""The Open Inference Protocol (KServe v2 gRPC, with Triton's extensions) on scan-server's port, as
a client written from the specification alone would use it: messages compiled by protoc from
proto/inference, calls by their method paths over plain grpcio, results against numpy's float64
cumprod on fresh random inputs, and every error class with its status and the field it names.
"""
import os
import re
import subprocess
import sys
import urllib.request
from multiprocessing import shared_memory

import grpc
import numpy as np
import pytest

from conftest import REPO, ServerProcess, assert_cumprod_close

SERVICE = "/inference.GRPCInferenceService/"


@pytest.fixture(scope="session")
def pb(tmp_path_factory):
    """inference's message classes, compiled now from the repository's .proto files."""
    out = tmp_path_factory.mktemp("kserve_stubs")
    proto_root = os.path.join(REPO, "proto")
    subprocess.run(["protoc", f"--proto_path={proto_root}", f"--python_out={out}",
                    "inference/model_config.proto", "inference/grpc_service.proto"], check=True)
    sys.path.insert(0, str(out))
    from inference import grpc_service_pb2
    return grpc_service_pb2


class KServe:
    """Calls GRPCInferenceService methods by path: what any generated stub does."""

    def __init__(self, pb, target, metadata=()):
        self.pb = pb
        self.metadata = tuple(metadata)
        self.channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", 300 << 20),
            ("grpc.max_send_message_length", 300 << 20)])

    def call(self, method, request):
        response_type = getattr(self.pb, method + "Response")
        stub = self.channel.unary_unary(SERVICE + method,
                                        request_serializer=type(request).SerializeToString,
                                        response_deserializer=response_type.FromString)
        return stub(request, timeout=60, metadata=self.metadata)

    def close(self):
        self.channel.close()


@pytest.fixture(scope="module")
def kserve_server():
    process = ServerProcess()
    yield process
    process.cleanup()


@pytest.fixture
def kserve(pb, kserve_server):
    client = KServe(pb, kserve_server.target)
    yield client
    client.close()


def to_bfloat16_bits(x32):
    """Round-to-nearest-even float32 -> bfloat16 bit patterns (uint16)."""
    bits = x32.astype(np.float32).view(np.uint32).astype(np.uint64)
    return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)


def from_bfloat16_bits(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


# KServe datatype -> (numpy storage dtype, name for the tolerance, raw bytes of float64 values,
# values back as float64).
DATATYPES = {
    "FP32": (lambda x: x.astype(np.float32).tobytes(), lambda b: np.frombuffer(b, np.float32),
             "float32"),
    "FP64": (lambda x: x.astype(np.float64).tobytes(), lambda b: np.frombuffer(b, np.float64),
             "float64"),
    "FP16": (lambda x: x.astype(np.float16).tobytes(), lambda b: np.frombuffer(b, np.float16),
             "float16"),
    "BF16": (lambda x: to_bfloat16_bits(x).tobytes(),
             lambda b: from_bfloat16_bits(np.frombuffer(b, np.uint16)), "bfloat16"),
}


def infer_request(pb, x, datatype="FP32", dim=None, backend=None, raw=True, **fields):
    request = pb.ModelInferRequest(model_name="cumprod", **fields)
    tensor = request.inputs.add(name="gamma", datatype=datatype, shape=list(x.shape))
    if raw:
        request.raw_input_contents.append(DATATYPES[datatype][0](x))
    elif datatype == "FP32":
        tensor.contents.fp32_contents.extend(x.astype(np.float32).ravel().tolist())
    else:
        tensor.contents.fp64_contents.extend(x.astype(np.float64).ravel().tolist())
    if dim is not None:
        request.parameters["dim"].int64_param = dim
    if backend is not None:
        request.parameters["backend"].string_param = backend
    return request


def stored_values(x, datatype):
    """The float64 values the server receives for float64 input `x` in `datatype`."""
    encode, decode, _ = DATATYPES[datatype]
    return decode(encode(x)).astype(np.float64).reshape(x.shape)


def check_result(response, x, datatype, dim):
    _, decode, name = DATATYPES[datatype]
    assert response.model_name == "cumprod" and response.model_version == "1"
    assert len(response.outputs) == 1 and len(response.raw_output_contents) == 1
    output = response.outputs[0]
    assert output.name == "output" and output.datatype == datatype
    assert list(output.shape) == list(x.shape)
    got = decode(response.raw_output_contents[0]).astype(np.float64).reshape(x.shape)
    assert_cumprod_close(got, stored_values(x, datatype), dim, name)


# ---- health and metadata --------------------------------------------------------------------


def test_server_live_ready_and_model_ready(kserve, pb):
    assert kserve.call("ServerLive", pb.ServerLiveRequest()).live
    assert kserve.call("ServerReady", pb.ServerReadyRequest()).ready
    assert kserve.call("ModelReady", pb.ModelReadyRequest(name="cumprod")).ready
    assert kserve.call("ModelReady", pb.ModelReadyRequest(name="cumprod", version="1")).ready


def test_server_metadata_lists_exactly_the_working_extensions(kserve, pb):
    metadata = kserve.call("ServerMetadata", pb.ServerMetadataRequest())
    assert metadata.name == "scan-service"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", metadata.version)
    # No --allow-shared-memory here: the shared-memory extensions are not listed.
    assert sorted(metadata.extensions) == ["model_configuration", "parameters", "statistics"]


def test_model_metadata_and_config_describe_cumprod(kserve, pb):
    metadata = kserve.call("ModelMetadata", pb.ModelMetadataRequest(name="cumprod"))
    assert metadata.name == "cumprod" and list(metadata.versions) == ["1"]
    assert [(t.name, t.datatype) for t in metadata.inputs] == [("gamma", "FP32")]
    assert [(t.name, t.datatype) for t in metadata.outputs] == [("output", "FP32")]
    assert all(d == -1 for d in metadata.inputs[0].shape)
    config = kserve.call("ModelConfig", pb.ModelConfigRequest(name="cumprod")).config
    assert config.name == "cumprod" and config.max_batch_size == 0
    assert [(i.name, i.data_type) for i in config.input] == [("gamma", 11)]  # TYPE_FP32
    assert [(o.name, o.data_type) for o in config.output] == [("output", 11)]
    assert config.parameters["datatypes"].string_value == "FP32,FP64,FP16,BF16"


@pytest.mark.parametrize("method,request_type,field", [
    ("ModelReady", "ModelReadyRequest", "name"),
    ("ModelMetadata", "ModelMetadataRequest", "name"),
    ("ModelConfig", "ModelConfigRequest", "name"),
    ("ModelStatistics", "ModelStatisticsRequest", "name"),
])
def test_unknown_model_or_version_is_not_found(kserve, pb, method, request_type, field):
    request_class = getattr(pb, request_type)
    for request, named in [(request_class(name="cumsum"), "name: unknown model 'cumsum'"),
                           (request_class(name="cumprod", version="2"), "version: model")]:
        with pytest.raises(grpc.RpcError) as error:
            kserve.call(method, request)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert error.value.details().startswith(named), error.value.details()


# ---- ModelInfer: results --------------------------------------------------------------------

SHAPES = [((2, 4, 64, 64), 2), ((7,), 0), ((1,), 0), ((3, 1021), 1), ((3, 1021), -1),
          ((2, 3, 5, 13), -2), ((1, 1, 1, 1), 2), ((4, 97, 3), 1)]


@pytest.mark.parametrize("datatype", sorted(DATATYPES))
@pytest.mark.parametrize("shape,dim", SHAPES, ids=str)
def test_model_infer_every_datatype_against_float64(kserve, pb, rng, datatype, shape, dim):
    x = rng.uniform(0.5, 1.0, size=shape)
    response = kserve.call("ModelInfer", infer_request(pb, x, datatype, dim=dim))
    check_result(response, x, datatype, dim)


@pytest.mark.parametrize("backend", ["auto", "cpu"])
def test_model_infer_backend_parameter_and_timing(kserve, pb, rng, backend):
    x = rng.uniform(0.9, 1.0, size=(2, 8, 256, 128))
    response = kserve.call("ModelInfer", infer_request(pb, x, "BF16", dim=2, backend=backend,
                                                       id="request-17"))
    check_result(response, x, "BF16", 2)
    assert response.id == "request-17"
    assert response.parameters["backend"].string_param.startswith("cpu-")
    assert response.parameters["total_us"].int64_param >= response.parameters[
        "compute_us"].int64_param >= 0


def test_model_infer_dim_defaults_to_zero_and_version_one_is_accepted(kserve, pb, rng):
    x = rng.uniform(0.5, 1.0, size=(9, 4))
    check_result(kserve.call("ModelInfer", infer_request(pb, x, model_version="1")), x, "FP32", 0)


@pytest.mark.parametrize("datatype", ["FP32", "FP64"])
def test_model_infer_typed_contents(kserve, pb, rng, datatype):
    x = rng.uniform(0.5, 1.0, size=(3, 50))
    response = kserve.call("ModelInfer", infer_request(pb, x, datatype, dim=1, raw=False))
    check_result(response, x, datatype, 1)


def test_model_infer_special_values_and_empty_tensors(kserve, pb):
    x = np.array([[0.5, 0.0, 2.0], [np.inf, 0.5, 0.0], [np.nan, 1.0, 1.0], [-0.0, 3.0, -1.0]])
    response = kserve.call("ModelInfer", infer_request(pb, x, "FP64", dim=1))
    got = np.frombuffer(response.raw_output_contents[0], np.float64).reshape(x.shape)
    np.testing.assert_array_equal(got, np.cumprod(x, axis=1))
    empty = np.zeros((3, 0, 5))
    response = kserve.call("ModelInfer", infer_request(pb, empty, "FP32", dim=1))
    assert list(response.outputs[0].shape) == [3, 0, 5]
    assert response.raw_output_contents[0] == b""


def test_model_infer_large_tensor(kserve, pb, rng):
    x = rng.uniform(0.999, 1.0, size=(2, 8, 1024, 128))  # 8 MiB of float32
    check_result(kserve.call("ModelInfer", infer_request(pb, x, "FP32", dim=2)), x, "FP32", 2)


# ---- ModelInfer: errors ---------------------------------------------------------------------


def error_of(kserve, request):
    with pytest.raises(grpc.RpcError) as error:
        kserve.call("ModelInfer", request)
    return error.value.code(), error.value.details()


def test_unknown_model_and_version(kserve, pb):
    x = np.full((4,), 0.5)
    request = infer_request(pb, x)
    request.model_name = "cumsum"
    code, details = error_of(kserve, request)
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("model_name: unknown model")
    request = infer_request(pb, x, model_version="3")
    code, details = error_of(kserve, request)
    assert code == grpc.StatusCode.NOT_FOUND and details.startswith("model_version:")
    # A huge name is quoted clipped: the status stays small enough for any client's metadata limit.
    request = infer_request(pb, x)
    request.model_name = "m" * (1 << 20)
    request.inputs[0].parameters["k" * (1 << 20)].int64_param = 1
    code, details = error_of(kserve, request)
    assert code == grpc.StatusCode.NOT_FOUND and len(details) < 200, len(details)
    request.model_name = "cumprod"
    code, details = error_of(kserve, request)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and len(details) < 300, len(details)


def invalid_cases(pb):
    """(description, request, the start of the message): each INVALID_ARGUMENT."""
    x = np.full((2, 3), 0.5)
    cases = []

    request = infer_request(pb, x)
    request.inputs[0].name = "beta"
    cases.append(("unknown input", request, "inputs[0].name: unknown input 'beta'"))

    request = infer_request(pb, x)
    request.inputs.add(name="gamma", datatype="FP32", shape=[2, 3])
    cases.append(("two inputs", request, "inputs: model 'cumprod' takes one input"))

    request = pb.ModelInferRequest(model_name="cumprod")
    cases.append(("no input", request, "inputs: model 'cumprod' takes one input"))

    request = infer_request(pb, x)
    request.inputs[0].datatype = "INT32"
    cases.append(("unsupported datatype", request, "inputs[0].datatype: 'INT32'"))

    request = infer_request(pb, x, "FP32")
    request.inputs[0].datatype = "FP64"  # 24 bytes for 6 FP64 elements that need 48
    cases.append(("datatype mismatch", request, "raw_input_contents[0]: holds 24 bytes"))

    request = infer_request(pb, x)
    request.inputs[0].contents.fp32_contents.extend([0.5] * 6)
    cases.append(("raw and typed contents", request, "inputs[0].contents: given together"))

    request = infer_request(pb, x, raw=False)
    request.inputs[0].contents.fp32_contents.append(0.5)
    cases.append(("typed count", request, "inputs[0].contents: holds 28 bytes"))

    request = infer_request(pb, x, "FP16")
    del request.raw_input_contents[:]
    request.inputs[0].contents.fp32_contents.extend([0.5] * 6)
    cases.append(("typed FP16", request, "inputs[0].contents: FP16 has no typed contents"))

    request = infer_request(pb, x, raw=False)
    request.inputs[0].contents.int_contents.extend([1] * 6)
    cases.append(("wrong typed field", request, "inputs[0].contents: FP32 elements go in"))

    request = infer_request(pb, x)
    request.raw_input_contents.append(b"")
    cases.append(("two raw entries", request, "raw_input_contents: 2 entries"))

    request = infer_request(pb, x)
    request.inputs[0].shape[:] = [2, -3]
    cases.append(("negative size", request, "inputs[0].shape[1]: size -3 is negative"))

    request = infer_request(pb, x)
    del request.inputs[0].shape[:]
    cases.append(("no shape", request, "inputs[0].shape: empty"))

    cases.append(("dim out of range", infer_request(pb, x, dim=2), "parameters[dim]: 2 is out of"))
    cases.append(("dim beyond int32", infer_request(pb, x, dim=1 << 40), "parameters[dim]:"))

    request = infer_request(pb, x)
    request.parameters["dim"].string_param = "1"
    cases.append(("dim not int64", request, "parameters[dim]: must be an int64_param"))

    cases.append(("unknown backend", infer_request(pb, x, backend="tpu"), "parameters[backend]:"))

    request = infer_request(pb, x)
    request.parameters["dims"].int64_param = 1
    cases.append(("unknown parameter", request, "parameters[dims]: unknown parameter"))

    request = infer_request(pb, x)
    request.inputs[0].parameters["shared_memory_offset"].int64_param = 0
    cases.append(("offset without region", request,
                  "inputs[0].parameters[shared_memory_region]: required"))

    request = infer_request(pb, x)
    request.inputs[0].parameters["layout"].string_param = "NCHW"
    cases.append(("unknown input parameter", request, "inputs[0].parameters[layout]: unknown"))

    request = infer_request(pb, x)
    request.outputs.add(name="result")
    cases.append(("unknown output", request, "outputs[0].name: unknown output 'result'"))

    request = infer_request(pb, x)
    request.outputs.add(name="output")
    request.outputs.add(name="output")
    cases.append(("two outputs", request, "outputs: model 'cumprod' has one output"))

    request = infer_request(pb, x)
    request.outputs.add(name="output").parameters["classification"].int64_param = 3
    cases.append(("classification", request, "outputs[0].parameters[classification]: unknown"))
    return cases


def test_every_invalid_request_names_its_field(kserve, pb):
    for description, request, expected in invalid_cases(pb):
        code, details = error_of(kserve, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (description, code, details)
        assert details.startswith(expected), (description, details)


def test_a_malformed_message_is_refused(kserve_server):
    channel = grpc.insecure_channel(kserve_server.target)
    try:
        stub = channel.unary_unary(SERVICE + "ModelInfer")
        with pytest.raises(grpc.RpcError) as error:
            stub(b"\x0a\xff\xff\xff\xff\x0f", timeout=10)  # a length past the message's end
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "inference.ModelInferRequest" in error.value.details()
    finally:
        channel.close()


def test_methods_the_server_does_not_serve_are_unimplemented(kserve_server):
    """Triton RPCs outside what ServerMetadata lists, and made-up paths, on the same port: a clean
    UNIMPLEMENTED, and the server goes on serving."""
    channel = grpc.insecure_channel(kserve_server.target)
    try:
        for path in [SERVICE + "RepositoryIndex", SERVICE + "Trace", SERVICE + "LogSettings",
                     "/inference.GRPCInferenceService/", "/inference.Nothing/ModelInfer", "/x"]:
            with pytest.raises(grpc.RpcError) as error:
                channel.unary_unary(path)(b"\x0a\x07cumprod", timeout=10)
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED, path
        stream = channel.stream_stream(SERVICE + "ModelStreamInfer")
        with pytest.raises(grpc.RpcError) as error:
            list(stream(iter([b"\x0a\x07cumprod"]), timeout=10))
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        live = channel.unary_unary(SERVICE + "ServerLive")(b"", timeout=10)
        assert live == b"\x08\x01"  # live: true
    finally:
        channel.close()


def test_a_tensor_over_the_limit_is_resource_exhausted(pb, start_server):
    server = start_server("--max-tensor-bytes", "1Mi", "--stream-chunk-bytes", "256Ki")
    client = KServe(pb, server.target)
    try:
        code, details = error_of(client, infer_request(pb, np.full((300, 1024), 0.5), "FP32"))
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details.startswith("inputs[0]:"), details
    finally:
        client.close()


def test_gpu_preference_without_a_gpu_is_failed_precondition(pb, start_server):
    server = start_server("--gpu", "off")
    client = KServe(pb, server.target)
    try:
        code, _ = error_of(client, infer_request(pb, np.full((3,), 0.5), backend="gpu"))
        assert code == grpc.StatusCode.FAILED_PRECONDITION
    finally:
        client.close()


# ---- statistics, consistent with the Prometheus metrics --------------------------------------


def scraped_requests(port):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    ok = failed = 0
    for line in text.splitlines():
        match = re.match(r'scan_requests_total\{.*code="(\w+)".*\} (\S+)', line)
        if match:
            if match.group(1) == "OK":
                ok += float(match.group(2))
            else:
                failed += float(match.group(2))
    model_infer = sum(float(value) for value in re.findall(
        r'scan_request_duration_seconds_count\{[^}]*rpc="ModelInfer"[^}]*\} (\S+)', text))
    return ok, failed, model_infer


def test_model_statistics_agree_with_the_prometheus_metrics(pb, start_server, tmp_path, rng):
    port_file = tmp_path / "metrics-port"
    server = start_server("--metrics-listen", "127.0.0.1:0", "--metrics-port-file",
                          str(port_file))
    client = KServe(pb, server.target)
    try:
        before = client.call("ModelStatistics", pb.ModelStatisticsRequest()).model_stats[0]
        assert before.inference_stats.success.count == 0
        for _ in range(5):
            x = rng.uniform(0.5, 1.0, size=(4, 33))
            client.call("ModelInfer", infer_request(pb, x, dim=1))
        for request in [infer_request(pb, np.full((2,), 0.5), dim=3),
                        infer_request(pb, np.full((2,), 0.5), backend="tpu")]:
            error_of(client, request)
        stats = client.call("ModelStatistics",
                            pb.ModelStatisticsRequest(name="cumprod")).model_stats
        assert [(s.name, s.version) for s in stats] == [("cumprod", "1")]
        stats = stats[0]
        assert stats.inference_count == stats.execution_count == 5
        inference = stats.inference_stats
        assert inference.success.count == 5 and inference.fail.count == 2
        assert inference.success.ns > 0 and inference.compute_infer.count == 5
        assert inference.compute_infer.ns <= inference.success.ns
        assert stats.last_inference > 1.6e12  # milliseconds since the epoch
        ok, failed, model_infer = scraped_requests(int(port_file.read_text()))
        assert (ok, failed) == (inference.success.count, inference.fail.count)
        assert model_infer == 5  # the request histogram's rpc label
    finally:
        client.close()


# ---- security ----------------------------------------------------------------------------------


def test_token_auth_applies_except_to_liveness_and_readiness(pb, start_server, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token-0123456789\n")
    server = start_server("--auth-token-file", str(token_file))
    anonymous = KServe(pb, server.target)
    wrong = KServe(pb, server.target, metadata=[("authorization", "Bearer nope")])
    holder = KServe(pb, server.target, metadata=[("authorization", "Bearer s3cret-token-0123456789")])
    try:
        assert anonymous.call("ServerLive", pb.ServerLiveRequest()).live
        assert anonymous.call("ServerReady", pb.ServerReadyRequest()).ready
        x = np.full((2, 5), 0.5)
        for client in (anonymous, wrong):
            for method, request in [("ModelInfer", infer_request(pb, x)),
                                    ("ServerMetadata", pb.ServerMetadataRequest()),
                                    ("ModelConfig", pb.ModelConfigRequest(name="cumprod")),
                                    ("ModelStatistics", pb.ModelStatisticsRequest())]:
                with pytest.raises(grpc.RpcError) as error:
                    client.call(method, request)
                assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, method
            # Credentials are checked before anything is said about the model.
            request = infer_request(pb, x)
            request.model_name = "secret-model"
            with pytest.raises(grpc.RpcError) as error:
                client.call("ModelInfer", request)
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        check_result(holder.call("ModelInfer", infer_request(pb, x, dim=1)), x, "FP32", 1)
    finally:
        for client in (anonymous, wrong, holder):
            client.close()


# ---- system shared memory (Triton's extension, on the scan.v1 regions) -------------------------


def test_shared_memory_is_refused_unless_allowed(kserve, pb):
    with pytest.raises(grpc.RpcError) as error:
        kserve.call("SystemSharedMemoryRegister", pb.SystemSharedMemoryRegisterRequest(
            name="r", key="/nothing", byte_size=64))
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    request = infer_request(pb, np.full((4,), 0.5))
    del request.raw_input_contents[:]
    request.inputs[0].parameters["shared_memory_region"].string_param = "r"
    request.inputs[0].parameters["shared_memory_byte_size"].int64_param = 16
    with pytest.raises(grpc.RpcError) as error:
        kserve.call("ModelInfer", request)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION


@pytest.fixture
def posix_region():
    regions = []

    def make(size):
        region = shared_memory.SharedMemory(create=True, size=size)
        regions.append(region)
        return region

    yield make
    for region in regions:
        region.close()
        region.unlink()


def test_system_shared_memory_in_and_out(pb, start_server, posix_region, rng):
    server = start_server("--allow-shared-memory", "true")
    client = KServe(pb, server.target)
    try:
        metadata = client.call("ServerMetadata", pb.ServerMetadataRequest())
        assert "system_shared_memory" in metadata.extensions
        assert "cuda_shared_memory" not in metadata.extensions  # no GPU backend here
        x = rng.uniform(0.5, 1.0, size=(4, 8, 300)).astype(np.float32)
        region = posix_region(2 * x.nbytes + 4096)
        key = "/" + region.name.lstrip("/")
        client.call("SystemSharedMemoryRegister", pb.SystemSharedMemoryRegisterRequest(name="tensors", key=key, offset=4096,
            byte_size=2 * x.nbytes))
        with pytest.raises(grpc.RpcError) as error:
            client.call("SystemSharedMemoryRegister", pb.SystemSharedMemoryRegisterRequest(
                name="tensors", key=key, byte_size=64))
        assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS
        for field, request in [
                ("byte_size", pb.SystemSharedMemoryRegisterRequest(name="huge", key=key,
                                                                   byte_size=1 << 63)),
                ("offset", pb.SystemSharedMemoryRegisterRequest(name="huge", key=key,
                                                                offset=(1 << 64) - 1,
                                                                byte_size=64))]:
            with pytest.raises(grpc.RpcError) as error:
                client.call("SystemSharedMemoryRegister", request)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert error.value.details().startswith(field + ":"), error.value.details()
        status = client.call("SystemSharedMemoryStatus", pb.SystemSharedMemoryStatusRequest())
        assert dict(status.regions)["tensors"].byte_size == 2 * x.nbytes
        assert status.regions["tensors"].key == key and status.regions["tensors"].offset == 4096
        np.ndarray(x.shape, np.float32, region.buf, offset=4096)[...] = x

        request = pb.ModelInferRequest(model_name="cumprod", id="shm")
        tensor = request.inputs.add(name="gamma", datatype="FP32", shape=list(x.shape))
        tensor.parameters["shared_memory_region"].string_param = "tensors"
        tensor.parameters["shared_memory_byte_size"].int64_param = x.nbytes
        output = request.outputs.add(name="output")
        output.parameters["shared_memory_region"].string_param = "tensors"
        output.parameters["shared_memory_offset"].int64_param = x.nbytes
        output.parameters["shared_memory_byte_size"].int64_param = x.nbytes
        request.parameters["dim"].int64_param = 2
        for _ in range(3):  # one registration, many requests
            response = client.call("ModelInfer", request)
            assert len(response.raw_output_contents) == 0 and response.id == "shm"
            assert response.outputs[0].parameters["shared_memory_region"].string_param == \
                "tensors"
            got = np.ndarray(x.shape, np.float32, region.buf, offset=4096 + x.nbytes)
            assert_cumprod_close(got.astype(np.float64), x.astype(np.float64), 2, "float32")

        request.inputs[0].parameters["shared_memory_offset"].int64_param = 2  # not on an element
        with pytest.raises(grpc.RpcError) as error:
            client.call("ModelInfer", request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith(
            "inputs[0].parameters[shared_memory_offset]: the tensor would start 2 bytes past"), \
            error.value.details()
        request.inputs[0].parameters["shared_memory_offset"].int64_param = x.nbytes + 8
        with pytest.raises(grpc.RpcError) as error:
            client.call("ModelInfer", request)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("inputs[0].parameters[shared_memory"), \
            error.value.details()

        with pytest.raises(grpc.RpcError) as error:
            client.call("SystemSharedMemoryStatus",
                        pb.SystemSharedMemoryStatusRequest(name="missing"))
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
        assert client.call("CudaSharedMemoryStatus", pb.CudaSharedMemoryStatusRequest()) \
            .regions == {}
        with pytest.raises(grpc.RpcError) as error:
            client.call("CudaSharedMemoryRegister", pb.CudaSharedMemoryRegisterRequest(
                name="gpu", raw_handle=b"\0" * 64, device_id=0, byte_size=64))
        assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
        client.call("SystemSharedMemoryRegister", pb.SystemSharedMemoryRegisterRequest(
            name="second", key=key, byte_size=64))
        client.call("SystemSharedMemoryUnregister",
                    pb.SystemSharedMemoryUnregisterRequest(name="tensors"))
        assert list(client.call("SystemSharedMemoryStatus",
                                pb.SystemSharedMemoryStatusRequest()).regions) == ["second"]
        # An empty name unregisters every system region of the caller.
        client.call("SystemSharedMemoryUnregister", pb.SystemSharedMemoryUnregisterRequest())
        assert client.call("SystemSharedMemoryStatus",
                           pb.SystemSharedMemoryStatusRequest()).regions == {}
        with pytest.raises(grpc.RpcError) as error:
            client.call("ModelInfer", request)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND
    finally:
        client.close()
