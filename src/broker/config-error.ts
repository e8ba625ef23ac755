// The error every broker option check throws, from the CLI's flags to the Broker constructor.

/** An option that cannot work; `code` names it, so callers need not match message text. */
export class ConfigError extends Error {
  override name = 'ConfigError';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}
