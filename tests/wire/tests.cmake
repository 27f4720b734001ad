# The wire layer (wire/): zero-copy codec, buffer pool, byte sizes.
scan_test(scan_wire_tests
  SOURCES wire/wire_codec_test.cc
  LIBS scan_wire scan_inference_proto
  LABELS unit)
