# The Python client's tests (client/python, issue 20): pytest against real scan-server processes
# the tests start on loopback. Needs Debian's python3-grpcio, -protobuf, -numpy, -pytest and
# -torch (scripts/install-deps.sh). Labelled `python`: the asan/tsan presets run only the unit
# and integration labels, so this never runs against a sanitizer build of the server (nothing in
# it exercises the server beyond what the C++ integration tests already cover under them).
set(SCAN_PYTHON3 /usr/bin/python3 CACHE FILEPATH "Python interpreter for the Python client tests")
# ctest fails any non-zero exit, so pytest's 5 (no tests collected) fails too.
add_test(NAME python.client
  COMMAND ${SCAN_PYTHON3} -m pytest -q -p no:cacheprovider --rootdir=${CMAKE_CURRENT_SOURCE_DIR}/python
          ${CMAKE_CURRENT_SOURCE_DIR}/python)
set_tests_properties(python.client PROPERTIES
  LABELS python
  # About 30 s on two idle cores; the ctest preset runs it beside the other suites.
  TIMEOUT 180
  ENVIRONMENT "SCAN_SERVER=$<TARGET_FILE:scan-server>;PYTHONPATH=${PROJECT_SOURCE_DIR}/client/python;PYTHONDONTWRITEBYTECODE=1")
