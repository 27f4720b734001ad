scan_test(scan_integration_tests
  SOURCES integration/service_test.cc integration/metrics_test.cc integration/security_test.cc
          integration/routing_test.cc integration/stream_test.cc integration/stream_progress_test.cc
          integration/metrics_endpoint_test.cc integration/shared_memory_test.cc
          integration/inference_test.cc
  LIBS scan_server_lib scan_client_lib
  LABELS integration)
target_compile_definitions(scan_integration_tests PRIVATE
  SCAN_TEST_CERT_SCRIPT="${CMAKE_CURRENT_SOURCE_DIR}/integration/make_test_certs.sh")

# Tests that run scan-server as separate processes (memory, signals, replicas).
scan_test(scan_resilience_tests
  SOURCES integration/resilience_test.cc
  LIBS scan_client_lib
  LABELS integration)
target_compile_definitions(scan_resilience_tests PRIVATE
  SCAN_SERVER_BINARY="$<TARGET_FILE:scan-server>")
add_dependencies(scan_resilience_tests scan-server)

# The client library against the server's gRPC transport (configure_transport + WireScanService,
# with a handler of the test's own): zero-copy calls both ways, status propagation, retries,
# deferral to the transport's threads, load balancing over several replicas.
scan_test(scan_transport_tests
  SOURCES integration/transport_test.cc
  LIBS scan_client_lib scan_wire_service
  LABELS integration)
