# Warnings apply to project code only, never to generated protobuf sources or third-party headers.
function(scan_warnings target)
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wpedantic -Wshadow=local>
    $<$<AND:$<COMPILE_LANGUAGE:CXX>,$<BOOL:${SCAN_WERROR}>>:-Werror>
    $<$<COMPILE_LANGUAGE:CUDA>:-Xcompiler=-Wall,-Wextra>
    $<$<AND:$<COMPILE_LANGUAGE:CUDA>,$<BOOL:${SCAN_WERROR}>>:-Werror=all-warnings>)
endfunction()
