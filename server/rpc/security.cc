#include "rpc/security.h"

#include <openssl/crypto.h>

#include <fstream>
#include <sstream>

namespace scan::server {

bool read_file(const std::string& path, std::string* contents) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return false;
  std::ostringstream buffer;
  buffer << file.rdbuf();
  *contents = buffer.str();
  return static_cast<bool>(file) || file.eof();
}

std::shared_ptr<grpc::ServerCredentials> make_server_credentials(const ServerConfig& config,
                                                                 std::string* error) {
  if (config.tls_cert.empty()) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions::PemKeyCertPair pair;
  if (!read_file(config.tls_cert, &pair.cert_chain) || pair.cert_chain.empty()) {
    *error = "--tls-cert: cannot read " + config.tls_cert;
    return nullptr;
  }
  if (!read_file(config.tls_key, &pair.private_key) || pair.private_key.empty()) {
    *error = "--tls-key: cannot read " + config.tls_key;
    return nullptr;
  }
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back(std::move(pair));
  if (!config.tls_client_ca.empty()) {
    if (!read_file(config.tls_client_ca, &options.pem_root_certs) ||
        options.pem_root_certs.empty()) {
      *error = "--tls-client-ca: cannot read " + config.tls_client_ca;
      return nullptr;
    }
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

std::optional<TokenAuthenticator> TokenAuthenticator::from_file(const std::string& path,
                                                                std::string* error,
                                                                const std::string& flag) {
  std::string token;
  if (!read_file(path, &token)) {
    *error = flag + ": cannot read " + path;
    return std::nullopt;
  }
  const auto first = token.find_first_not_of(" \t\r\n");
  const auto last = token.find_last_not_of(" \t\r\n");
  token = first == std::string::npos ? "" : token.substr(first, last - first + 1);
  if (token.size() < 16) {
    *error = flag + ": the token must have at least 16 characters";
    return std::nullopt;
  }
  return TokenAuthenticator(std::move(token));
}

grpc::Status TokenAuthenticator::check(const grpc::ServerContextBase& context) const {
  const auto& metadata = context.client_metadata();
  const auto found = metadata.find("authorization");
  if (found == metadata.end() ||
      !matches(std::string_view(found->second.data(), found->second.length()))) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "authorization: a valid 'Bearer <token>' is required");
  }
  return grpc::Status::OK;
}

bool TokenAuthenticator::matches(std::string_view presented) const {
  static constexpr std::string_view kScheme = "Bearer ";
  if (presented.size() != kScheme.size() + token_.size() ||
      presented.substr(0, kScheme.size()) != kScheme) {
    return false;
  }
  // Constant time, so response timing reveals nothing about how much of the token matched.
  return CRYPTO_memcmp(presented.data() + kScheme.size(), token_.data(), token_.size()) == 0;
}

}  // namespace scan::server
