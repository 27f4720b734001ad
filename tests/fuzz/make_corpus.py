#!/usr/bin/env python3
"""Writes the fuzzers' seed corpus: small valid inputs and near misses of each check.

The output is committed (tests/fuzz/corpus/<harness>/); rerun this after changing the formats and
commit the result. Deterministic: the same script always writes the same bytes. Protobuf is
encoded by hand (a few lines of wire format) so that no Python protobuf package is needed.
"""
import os
import shutil
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# scan.v1 enums (proto/scan/v1/scan.proto).
FLOAT32, FLOAT64, FLOAT16, BFLOAT16 = 1, 2, 3, 4
ELEMENT_SIZE = {FLOAT32: 4, FLOAT64: 8, FLOAT16: 2, BFLOAT16: 2}


def varint(value):
    value &= (1 << 64) - 1  # negative int64/int32 travel as 10-byte two's complement
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def field_bytes(number, payload):
    return varint((number << 3) | 2) + varint(len(payload)) + payload


def decays(dtype, count):
    """Deterministic values in (0.5, 1) in the dtype's little-endian storage."""
    values = [0.5 + 0.5 * ((7 * i + 3) % 17) / 17.0 for i in range(count)]
    if dtype == FLOAT64:
        return struct.pack("<%dd" % count, *values)
    if dtype == FLOAT32:
        return struct.pack("<%df" % count, *values)
    if dtype == FLOAT16:
        return struct.pack("<%de" % count, *values)
    # bfloat16: the high half of the float32 pattern
    return b"".join(struct.pack("<f", v)[2:] for v in values)


def request(dtype, shape, dim, data=None, backend=0, op=0, packed=True, data_delta=0):
    count = 1
    for size in shape:
        count *= max(size, 0)
    if data is None:
        data = decays(dtype, count) if count < 4096 else b""
        data = data[: max(len(data) + data_delta, 0)] if data_delta < 0 else data + b"\0" * data_delta
    tensor = b""
    if dtype:
        tensor += field_varint(1, dtype)
    if packed and shape:
        tensor += field_bytes(2, b"".join(varint(s) for s in shape))
    else:
        tensor += b"".join(field_varint(2, s) for s in shape)
    if data:
        tensor += field_bytes(3, data)
    message = field_bytes(1, tensor)
    if dim:
        message += field_varint(2, dim)
    if backend:
        message += field_varint(3, backend)
    if op:
        message += field_varint(4, op)
    return message


def requests():
    yield "f32_2x3_dim1", request(FLOAT32, [2, 3], 1)
    yield "f64_5_dim0", request(FLOAT64, [5], 0)
    yield "f16_2x2x4_dim_minus1", request(FLOAT16, [2, 2, 4], -1)
    yield "bf16_1x5x3_dim1_cpu_cumprod", request(BFLOAT16, [1, 5, 3], 1, backend=1, op=1)
    yield "f32_3x4x8_dim0_unpacked", request(FLOAT32, [3, 4, 8], 0, packed=False)
    yield "f32_4x64x4_dim1", request(FLOAT32, [4, 64, 4], 1)
    yield "f32_zero_size_0x4", request(FLOAT32, [0, 4], 1)
    yield "f32_rank4_2x2x8x2_dim2", request(FLOAT32, [2, 2, 8, 2], 2)
    yield "gpu_preference", request(FLOAT32, [2, 2], 0, backend=2)
    # Near misses: each fails exactly one check.
    yield "bad_data_short", request(FLOAT32, [2, 3], 1, data_delta=-1)
    yield "bad_data_long", request(FLOAT32, [2, 3], 1, data_delta=4)
    yield "bad_dtype_unspecified", request(0, [2, 3], 1, data=decays(FLOAT32, 6))
    yield "bad_dtype_unknown", request(9, [2], 0, data=b"\0" * 8)
    yield "bad_rank0", request(FLOAT32, [], 0, data=b"\0" * 4)
    yield "bad_rank17", request(FLOAT32, [1] * 17, 0)
    yield "bad_negative_size", request(FLOAT32, [2, -3], 0, data=b"")
    yield "bad_overflow_shape", request(FLOAT32, [1 << 62, 1 << 62], 0, data=b"")
    yield "bad_overflow_bytes", request(FLOAT64, [1 << 61], 0, data=b"")
    yield "bad_zero_size_overflow", request(FLOAT32, [0, 1 << 62, 1 << 62], 0, data=b"")
    yield "bad_too_big", request(FLOAT32, [1 << 20], 0, data=b"")
    yield "bad_dim_high", request(FLOAT32, [2, 3], 2)
    yield "bad_dim_low", request(FLOAT32, [2, 3], -3)
    yield "bad_backend", request(FLOAT32, [2], 0, backend=7)
    yield "bad_op", request(FLOAT32, [2], 0, op=2)
    yield "bad_no_gamma", field_varint(2, 1)
    yield "bad_truncated", request(FLOAT32, [2, 3], 1)[:-5]
    yield "empty", b""


def framed(*messages):
    """One stream_fuzzer input: each message behind its 2-byte little-endian length."""
    return b"".join(struct.pack("<H", len(m)) + m for m in messages)


def stream_header(dtype, shape, dim, **kwargs):
    return field_bytes(1, request(dtype, shape, dim, data=b"", **kwargs))


def chunk(payload, number=2):
    return field_bytes(number, payload)


def streams():
    data = decays(FLOAT32, 24)
    header = stream_header(FLOAT32, [2, 3, 4], 1)
    yield "f32_one_chunk", framed(header, chunk(data))
    yield "f32_odd_chunks", framed(header, chunk(data[:7]), chunk(data[7:50]), chunk(data[50:]))
    yield "bf16_bytewise", framed(stream_header(BFLOAT16, [5], 0),
                                  *[chunk(bytes([b])) for b in decays(BFLOAT16, 5)])
    yield "f64_empty_chunks", framed(stream_header(FLOAT64, [3], 0), chunk(b""),
                                     chunk(decays(FLOAT64, 3)), chunk(b""))
    yield "f32_zero_size", framed(stream_header(FLOAT32, [0, 4], 1))
    # A chunk written with an unknown field first takes the protobuf path.
    yield "f32_chunk_with_unknown_field", framed(
        header, field_varint(9, 1) + chunk(data))
    yield "f32_chunk_repeated_field", framed(header, chunk(data[:10]) + chunk(data))
    # Near misses.
    yield "bad_chunk_first", framed(chunk(data))
    yield "bad_second_header", framed(header, chunk(data[:8]), header)
    yield "bad_too_many", framed(header, chunk(data), chunk(b"x"))
    yield "bad_too_few", framed(header, chunk(data[:-1]))
    yield "bad_neither", framed(header, b"")
    yield "bad_header_with_data", framed(field_bytes(1, request(FLOAT32, [2], 0)), chunk(b""))
    yield "bad_header_dim", framed(stream_header(FLOAT32, [2, 3], 2), chunk(data[:24]))
    yield "bad_truncated_chunk", framed(header, chunk(data)[:-3])
    yield "bad_huge_length", framed(header, varint(2 << 3 | 2) + varint(1 << 40))


def reference(region, offset, byte_size):
    return field_bytes(1, region.encode()) + field_varint(2, offset) + field_varint(3, byte_size)


def registration(name, key, offset, byte_size, kind=1):
    return (field_bytes(1, name.encode()) + field_varint(2, kind) + field_bytes(3, key.encode())
            + field_varint(4, offset) + field_varint(5, byte_size))


def shm_request(dtype, shape, dim, gamma_ref, output_ref=None):
    tensor = (field_varint(1, dtype) + field_bytes(2, b"".join(varint(s) for s in shape))
              + field_bytes(4, gamma_ref))
    message = field_bytes(1, tensor) + field_varint(2, dim)
    if output_ref is not None:
        message += field_bytes(5, output_ref)
    return message


def shm_input(registration_bytes, request_bytes):
    """One shared_memory_fuzzer input: the registration's length, it, then the Scan request."""
    return bytes([len(registration_bytes)]) + registration_bytes + request_bytes


def shared_memory_inputs():
    """Regions "r" (64 KiB) and "half" (its second 32 KiB) exist in the harness."""
    ok_registration = registration("extra", "/scan-fuzz-seed", 0, 4096)
    yield "f32_in_r_out_r", shm_input(ok_registration, shm_request(
        FLOAT32, [4, 8], 1, reference("r", 0, 128), reference("r", 4096, 128)))
    yield "bf16_in_place", shm_input(b"", shm_request(
        BFLOAT16, [64], 0, reference("half", 64, 128), reference("half", 64, 128)))
    yield "f64_to_message", shm_input(b"", shm_request(FLOAT64, [2, 8], 0, reference("r", 8, 128)))
    yield "f16_across_regions", shm_input(b"", shm_request(
        FLOAT16, [3, 5, 2], 1, reference("r", 0, 60), reference("half", 1000, 60)))
    # Near misses.
    yield "bad_offset_past_end", shm_input(b"", shm_request(
        FLOAT32, [4], 0, reference("r", 65536, 16)))
    yield "bad_range_past_end", shm_input(b"", shm_request(
        FLOAT32, [8], 0, reference("half", 32760, 32)))
    yield "bad_size_mismatch", shm_input(b"", shm_request(FLOAT32, [8], 0, reference("r", 0, 31)))
    yield "bad_unknown_region", shm_input(b"", shm_request(FLOAT32, [8], 0, reference("x", 0, 32)))
    yield "bad_alias_shifted", shm_input(b"", shm_request(
        FLOAT32, [8], 0, reference("r", 0, 32), reference("r", 4, 32)))
    yield "bad_alias_other_region", shm_input(b"", shm_request(
        FLOAT32, [8], 0, reference("r", 32768, 32), reference("half", 4, 32)))
    yield "bad_registration_name", shm_input(registration("a/b", "/k", 0, 16), b"")
    yield "bad_registration_key", shm_input(registration("k", "../etc", 0, 16), b"")
    yield "bad_registration_negative", shm_input(registration("k", "/k", -5, 16), b"")
    yield "bad_registration_overflow", shm_input(registration("k", "/k", 1 << 62, 1 << 62), b"")
    yield "bad_registration_kind", shm_input(registration("k", "/k", 0, 16, kind=5), b"")


def npy(descr, shape, data, version=1, fortran="False", header=None, pad=True):
    if header is None:
        dims = ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else "")
        header = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (descr, fortran, dims)
    length_bytes = 2 if version == 1 else 4
    if pad:
        unpadded = 8 + length_bytes + len(header) + 1
        header += " " * ((64 - unpadded % 64) % 64)
    header += "\n"
    encoded = header.encode("latin-1")
    length = struct.pack("<H" if version == 1 else "<I", len(encoded))
    return b"\x93NUMPY" + bytes([version, 0]) + length + encoded + data


def npys():
    yield "f4_2x3", npy("<f4", [2, 3], decays(FLOAT32, 6))
    yield "f8_5", npy("<f8", [5], decays(FLOAT64, 5))
    yield "f2_2x2x2", npy("<f2", [2, 2, 2], decays(FLOAT16, 8))
    yield "f4_v2", npy("<f4", [3], decays(FLOAT32, 3), version=2)
    yield "f4_v3", npy("<f4", [1, 4], decays(FLOAT32, 4), version=3)
    yield "f4_native_order", npy("=f4", [2], decays(FLOAT32, 2))
    yield "f4_zero_size", npy("<f4", [0, 3], b"")
    yield "f4_unpadded_reordered", npy(
        None, None, decays(FLOAT32, 2),
        header="{'shape': (2,), 'fortran_order': False, 'descr': '<f4'}", pad=False)
    # Near misses.
    yield "bad_big_endian", npy(">f4", [2], decays(FLOAT32, 2))
    yield "bad_int", npy("<i4", [2], b"\0" * 8)
    yield "bad_fortran", npy("<f4", [2, 2], decays(FLOAT32, 4), fortran="True")
    yield "bad_scalar", npy("<f4", [], decays(FLOAT32, 1),
                            header="{'descr': '<f4', 'fortran_order': False, 'shape': (), }")
    yield "bad_short_data", npy("<f4", [4], decays(FLOAT32, 3))
    yield "bad_huge_shape", npy("<f4", [1 << 40, 1 << 40], b"")
    yield "bad_negative_shape", npy("<f4", [-2], b"",
                                    header="{'descr': '<f4', 'fortran_order': False, 'shape': (-2,), }")
    yield "bad_version", npy("<f4", [2], decays(FLOAT32, 2), version=4)
    yield "bad_no_descr", npy(None, None, b"", header="{'fortran_order': False, 'shape': (2,), }")
    yield "bad_magic", b"\x93NUMPZ\x01\x00"
    yield "bad_truncated_header", npy("<f4", [2], decays(FLOAT32, 2))[:20]


def infer_parameter(key, number, value):
    """A map<string, InferParameter> entry: key, and the parameter's oneof field `number`."""
    if isinstance(value, bytes):
        parameter = field_bytes(number, value)
    else:
        parameter = field_varint(number, value)
    return field_bytes(1, key.encode()) + field_bytes(2, parameter)


INT64_PARAM, STRING_PARAM = 2, 3


def infer(datatype, shape, dim=None, model=b"cumprod", name=b"gamma", raw=True, typed=None,
          input_parameters=(), parameters=(), outputs=(), extra_raw=0, data_delta=0):
    """A KServe v2 ModelInferRequest (proto/inference/grpc_service.proto), encoded by hand."""
    dtype = {b"FP32": FLOAT32, b"FP64": FLOAT64, b"FP16": FLOAT16, b"BF16": BFLOAT16}.get(datatype)
    count = 1
    for size in shape:
        count *= max(size, 0)
    tensor = field_bytes(1, name) + field_bytes(2, datatype)
    if shape:
        tensor += field_bytes(3, b"".join(varint(s) for s in shape))
    for key, number, value in input_parameters:
        tensor += field_bytes(4, infer_parameter(key, number, value))
    if typed is not None:
        tensor += field_bytes(5, field_bytes(6, struct.pack("<%df" % len(typed), *typed)))
    message = field_bytes(1, model) + field_bytes(5, tensor)
    if dim is not None:
        message += field_bytes(4, infer_parameter("dim", INT64_PARAM, dim))
    for key, number, value in parameters:
        message += field_bytes(4, infer_parameter(key, number, value))
    for output_name, output_parameters in outputs:
        output = field_bytes(1, output_name)
        for key, number, value in output_parameters:
            output += field_bytes(2, infer_parameter(key, number, value))
        message += field_bytes(6, output)
    if raw:
        data = decays(dtype or FLOAT32, count) if count < 4096 else b""
        data = data[: len(data) + data_delta] if data_delta < 0 else data + b"\0" * data_delta
        message += field_bytes(7, data)
    for _ in range(extra_raw):
        message += field_bytes(7, b"")
    return message


def inferences():
    yield "fp32_2x3_dim1", infer(b"FP32", [2, 3], 1)
    yield "fp64_5", infer(b"FP64", [5])
    yield "fp16_2x2x4_dim_minus1", infer(b"FP16", [2, 2, 4], -1)
    yield "bf16_1x5x3_cpu", infer(b"BF16", [1, 5, 3], 1,
                                  parameters=[("backend", STRING_PARAM, b"cpu")])
    yield "fp32_typed", infer(b"FP32", [2, 2], 1, raw=False, typed=[0.5, 0.75, 0.9, 0.99])
    yield "fp32_output_named", infer(b"FP32", [3], 0, outputs=[(b"output", [])])
    yield "fp32_zero_size", infer(b"FP32", [0, 4], 1)
    yield "fp32_input_region", infer(b"FP32", [4], 0, raw=False, input_parameters=[
        ("shared_memory_region", STRING_PARAM, b"r"), ("shared_memory_byte_size", INT64_PARAM, 16)])
    yield "fp32_output_region", infer(b"FP32", [4], 0, outputs=[(b"output", [
        ("shared_memory_region", STRING_PARAM, b"r"), ("shared_memory_offset", INT64_PARAM, 64),
        ("shared_memory_byte_size", INT64_PARAM, 16)])])
    # Near misses: each fails one check.
    yield "bad_model", infer(b"FP32", [2], model=b"cumsum")
    yield "bad_input_name", infer(b"FP32", [2], name=b"beta")
    yield "bad_datatype", infer(b"INT32", [2])
    yield "bad_data_short", infer(b"FP32", [2, 3], 1, data_delta=-1)
    yield "bad_raw_and_typed", infer(b"FP32", [2], typed=[0.5, 0.5])
    yield "bad_two_raw", infer(b"FP32", [2], extra_raw=1)
    yield "bad_dim", infer(b"FP32", [2, 3], 2)
    yield "bad_dim_huge", infer(b"FP32", [2, 3], 1 << 40)
    yield "bad_dim_string", infer(b"FP32", [2], parameters=[("dim", STRING_PARAM, b"0")])
    yield "bad_parameter", infer(b"FP32", [2], parameters=[("sequence_id", INT64_PARAM, 3)])
    yield "bad_negative_size", infer(b"FP32", [2, -3], raw=False)
    yield "bad_output_name", infer(b"FP32", [2], outputs=[(b"out", [])])
    yield "bad_region_without_size", infer(b"FP32", [2], raw=False, input_parameters=[
        ("shared_memory_region", STRING_PARAM, b"r")])
    yield "bad_truncated", infer(b"FP32", [2, 3], 1)[:-5]


def write(directory, seeds):
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    os.makedirs(directory)
    for name, data in seeds:
        with open(os.path.join(directory, name), "wb") as out:
            out.write(data)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "corpus")
    write(os.path.join(root, "scan_request_fuzzer"), requests())
    write(os.path.join(root, "scan_npy_fuzzer"), npys())
    write(os.path.join(root, "scan_shared_memory_fuzzer"), shared_memory_inputs())
    write(os.path.join(root, "scan_stream_fuzzer"), streams())
    write(os.path.join(root, "scan_inference_fuzzer"), inferences())


if __name__ == "__main__":
    main()
