export { CarevaultError, ConfigurationError, OAuthError, TransportError } from './errors.js';
export {
  type AccessToken,
  type ClientAuthentication,
  TokenManager,
  type TokenManagerOptions,
} from './token-manager.js';
