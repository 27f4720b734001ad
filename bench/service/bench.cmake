# The transport floor of issue 7: a gRPC echo on scan-server's own stack and a raw TCP echo.
# bench/service/run.sh runs them with scan-server and the Python comparison server side by side.
add_executable(scan-bench-echo ${CMAKE_CURRENT_LIST_DIR}/echo_server.cc)
target_link_libraries(scan-bench-echo PRIVATE scan_wire_service)
scan_warnings(scan-bench-echo)

add_executable(scan-bench-tcp-echo ${CMAKE_CURRENT_LIST_DIR}/tcp_echo_server.cc)
target_link_libraries(scan-bench-tcp-echo PRIVATE Threads::Threads)
scan_warnings(scan-bench-tcp-echo)
