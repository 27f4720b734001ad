add_test(NAME e2e.cli_check
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/cli_check.sh $<TARGET_FILE:scan-server>
          $<TARGET_FILE:scan-client>)
add_test(NAME e2e.metrics_prometheus
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/metrics_prometheus.sh $<TARGET_FILE:scan-server>
          $<TARGET_FILE:scan-client> ${PROJECT_SOURCE_DIR})
set_tests_properties(e2e.cli_check e2e.metrics_prometheus PROPERTIES LABELS e2e TIMEOUT 300)
