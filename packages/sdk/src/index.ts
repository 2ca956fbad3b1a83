export { CarevaultError, ConfigurationError, OAuthError, TransportError } from './errors.ts';
export {
  type AccessToken,
  type ClientAuthentication,
  TokenManager,
  type TokenManagerOptions,
} from './token-manager.ts';
