add_test(NAME e2e.cli_check
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/e2e/cli_check.sh $<TARGET_FILE:scan-server>
          $<TARGET_FILE:scan-client>)
set_tests_properties(e2e.cli_check PROPERTIES LABELS e2e TIMEOUT 300)
