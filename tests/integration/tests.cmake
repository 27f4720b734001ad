scan_test(scan_integration_tests
  SOURCES integration/service_test.cc integration/metrics_test.cc
  LIBS scan_server_lib scan_client_lib
  LABELS integration)
