// The logger a Client or Worker may be given: pino's call shape (fields first, then the message), so a pino logger
// or a child of one fits as is, and so does `console`. Every method is optional.

export interface Logger {
  debug?(fields: object, msg: string): void;
  info?(fields: object, msg: string): void;
  warn?(fields: object, msg: string): void;
  error?(fields: object, msg: string): void;
}
