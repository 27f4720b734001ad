scan_test(scan_unit_tests
  SOURCES
    unit/request_validation_test.cc
    unit/router_test.cc
    unit/chunk_plan_test.cc
    unit/device_health_test.cc
    unit/config_test.cc
    unit/half_conversion_test.cc
    unit/npy_test.cc
    unit/metrics_test.cc
    unit/shared_memory_registry_test.cc
  LIBS scan_server_lib scan_client_lib scan_npy scan_chunk_plan
  LABELS unit)

# Separate binary: it links LibTorch and its cases take longest.
scan_test(scan_cpu_torch_backend_tests
  SOURCES unit/cpu_torch_backend_test.cc
  LIBS scan_backend_cpu_torch scan_kernels_cpu
  LABELS unit)

# The include rules between layers (tests/unit/layering_test.py): no build, only the sources.
add_test(NAME unit.layering COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/unit/layering_test.py
                                    ${PROJECT_SOURCE_DIR})
set_tests_properties(unit.layering PROPERTIES LABELS unit TIMEOUT 60)

# The README's configuration table against --help, which prints the server's one option table.
add_test(NAME unit.readme_config
  COMMAND python3 ${CMAKE_CURRENT_SOURCE_DIR}/unit/readme_config_test.py $<TARGET_FILE:scan-server>
          ${PROJECT_SOURCE_DIR}/README.md)
set_tests_properties(unit.readme_config PROPERTIES LABELS unit TIMEOUT 60)
