add_test(NAME e2e.cli_check
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/cli_check.sh $<TARGET_FILE:scan-server>
          $<TARGET_FILE:scan-client>)
add_test(NAME e2e.metrics_prometheus
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/metrics_prometheus.sh $<TARGET_FILE:scan-server>
          $<TARGET_FILE:scan-client> ${PROJECT_SOURCE_DIR})
add_test(NAME e2e.cli_security
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/cli_security.sh $<TARGET_FILE:scan-server>
          $<TARGET_FILE:scan-client> ${CMAKE_CURRENT_SOURCE_DIR}/integration/make_test_certs.sh)
set_tests_properties(e2e.cli_check e2e.metrics_prometheus e2e.cli_security
  PROPERTIES LABELS e2e TIMEOUT 300)
