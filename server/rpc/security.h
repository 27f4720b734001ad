// Transport security (TLS, mutual TLS) and bearer-token authentication of calls.
#pragma once

#include <grpcpp/security/server_credentials.h>
#include <grpcpp/server_context.h>

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "app/config.h"

namespace scan::server {

// Insecure credentials unless --tls-cert/--tls-key are set; with --tls-client-ca, clients must
// present a certificate signed by that CA. Null (and *error set) when a file cannot be read.
std::shared_ptr<grpc::ServerCredentials> make_server_credentials(const ServerConfig& config,
                                                                 std::string* error);

// Checks the "authorization: Bearer <token>" metadata of a call against the configured token.
class TokenAuthenticator {
 public:
  // Reads the token (surrounding whitespace stripped). Nullopt and *error when unusable.
  // `flag` names the option in error messages.
  static std::optional<TokenAuthenticator> from_file(const std::string& path, std::string* error,
                                                     const std::string& flag = "--auth-token-file");

  // OK, or UNAUTHENTICATED without revealing anything about the expected token.
  grpc::Status check(const grpc::ServerContextBase& context) const;

  // Whether an "authorization" value is "Bearer <the token>", in time independent of how much of
  // the token matched.
  bool matches(std::string_view authorization) const;

 private:
  explicit TokenAuthenticator(std::string token) : token_(std::move(token)) {}

  std::string token_;
};

// Reads a whole file; false when it cannot.
bool read_file(const std::string& path, std::string* contents);

}  // namespace scan::server
