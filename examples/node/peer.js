#!/usr/bin/env node
// A Postage peer in Node.js, written from the wire-format page of the Postage docs
// (docs/reference/wire.rst) and nothing else: it calls Postage components, sends them
// messages, and answers the RPC calls of Postage producers.
//
//   node peer.js call EXCHANGE KEY NAME [PARAMETERS_JSON]   call NAME; print the result content
//   node peer.js send EXCHANGE KEY NAME [PARAMETERS_JSON]   send the command NAME (no answer)
//   node peer.js serve EXCHANGE KEY QUEUE                   answer calls until sent "quit"
//
// AMQP_URL picks the broker (default amqp://guest:guest@127.0.0.1:5672/); CALL_TIMEOUT the
// seconds `call` waits (default 10). `call` exits 0 for a "success" result, 1 for "error" or
// "exception", 2 when no queue is bound for the call or nobody answered in time.
'use strict';

const crypto = require('node:crypto');
const os = require('node:os');
const amqp = require('amqplib');

const URL = process.env.AMQP_URL || 'amqp://guest:guest@127.0.0.1:5672/';
const DIRECT_REPLY_TO = 'amq.rabbitmq.reply-to';
const JSON_TYPE = 'application/json';

// The envelope: every field of the wire page's table.
function envelope(type, name, category, content) {
  return {
    type, name, category, version: 2,
    fingerprint: {
      name: 'node-peer', type: 'example', pid: process.pid, host: os.hostname(),
      user: os.userInfo().username, vhost: '/',
    },
    content, _reserved: {},
  };
}

function encode(body) {
  return Buffer.from(JSON.stringify(body), 'utf8');
}

function result(type, value, message) {
  return envelope('result', 'none', 'message', { type, value, message });
}

// What a delivery's body must be (the wire page's validation): an object with a string
// "type", a "category" of "message" or "rpc", and version 2 (or "2") when present.
function decode(msg) {
  const contentType = msg.properties.contentType;
  if (contentType !== undefined && contentType !== JSON_TYPE) {
    throw new Error(`content type ${contentType} is not ${JSON_TYPE}`);
  }
  const body = JSON.parse(msg.content.toString('utf8'));
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new Error('the envelope is not an object');
  }
  if (body.category !== 'message' && body.category !== 'rpc') {
    throw new Error(`unknown category ${JSON.stringify(body.category)}`);
  }
  if (typeof body.type !== 'string') throw new Error('the envelope has no type');
  if (body.version !== undefined && body.version !== 2 && body.version !== '2') {
    throw new Error(`unsupported version ${JSON.stringify(body.version)}`);
  }
  return {
    ...body,
    name: body.name === undefined ? 'none' : body.name,
    content: body.content === undefined ? {} : body.content,
  };
}

function parameters(text) {
  return text === undefined ? {} : JSON.parse(text);
}

// ---- calling a Postage component -------------------------------------------------------

async function call(exchange, key, name, params) {
  const connection = await amqp.connect(URL);
  try {
    const channel = await connection.createChannel();
    const correlationId = crypto.randomUUID();
    const timeout = Number(process.env.CALL_TIMEOUT || 10) * 1000;
    const answer = new Promise((resolve) => {
      const timer = setTimeout(() => resolve({ exit: 2, text: 'no reply in time' }), timeout);
      channel.on('return', () => {
        clearTimeout(timer);
        resolve({ exit: 2, text: 'unroutable: no queue is bound for that exchange and key' });
      });
      // Consume the direct reply-to pseudo-queue (auto-ack) before publishing, on the
      // channel the request goes out on.
      channel.consume(DIRECT_REPLY_TO, (msg) => {
        if (msg.properties.correlationId !== correlationId) return; // a stray reply
        clearTimeout(timer);
        try {
          const content = decode(msg).content;
          resolve({ exit: content.type === 'success' ? 0 : 1, text: JSON.stringify(content) });
        } catch (error) {
          resolve({ exit: 2, text: `malformed reply: ${error.message}` });
        }
      }, { noAck: true }).then(() => {
        channel.publish(exchange, key,
          encode(envelope('command', name, 'rpc', { parameters: params })),
          { contentType: JSON_TYPE, correlationId, replyTo: DIRECT_REPLY_TO, mandatory: true });
      });
    });
    const { exit, text } = await answer;
    (exit === 2 ? process.stderr : process.stdout).write(`${text}\n`);
    return exit;
  } finally {
    await connection.close();
  }
}

async function send(exchange, key, name, params) {
  const connection = await amqp.connect(URL);
  try {
    const channel = await connection.createConfirmChannel();
    channel.publish(exchange, key,
      encode(envelope('command', name, 'message', { parameters: params })),
      { contentType: JSON_TYPE });
    await channel.waitForConfirms();
    return 0;
  } finally {
    await connection.close();
  }
}

// ---- answering Postage producers -------------------------------------------------------

const handlers = {
  hello: (p) => `Hello, ${p.who}! (from Node.js)`,
  add: (p) => p.a + p.b,
  fail: () => { throw new RangeError('this call always fails'); },
};

async function serve(exchange, key, queue) {
  const connection = await amqp.connect(URL);
  const channel = await connection.createChannel();
  // The exchange with the flags of a Postage Exchange class's defaults: direct, durable.
  await channel.assertExchange(exchange, 'direct', { durable: true, autoDelete: false });
  await channel.assertQueue(queue, { durable: false, autoDelete: true });
  await channel.bindQueue(queue, exchange, key);
  await channel.prefetch(10);
  let stopping = false;

  function reply(msg, body) {
    const { replyTo, correlationId } = msg.properties;
    if (!replyTo) return; // nobody to answer
    const options = { contentType: JSON_TYPE };
    if (correlationId !== undefined) options.correlationId = correlationId;
    channel.publish('', replyTo, encode(body), options);
  }

  await channel.consume(queue, (msg) => {
    if (msg === null) return; // the broker cancelled us
    let body;
    try {
      body = decode(msg);
    } catch (error) {
      process.stderr.write(`rejected a delivery: ${error.message}\n`);
      channel.reject(msg, false); // no requeue: a dead-letter exchange would keep it
      return;
    }
    if (body.category === 'rpc') {
      const handler = body.type === 'command' ? handlers[body.name] : undefined;
      if (handler === undefined) {
        reply(msg, result('error', null, `no handler for ${body.type}/${body.name} in node peer`));
      } else {
        try {
          reply(msg, result('success', handler(body.content.parameters || {}), ''));
        } catch (error) {
          reply(msg, result('exception', error.name, error.message));
        }
      }
      process.stdout.write(`answered ${body.name} (correlation id ${
        msg.properties.correlationId === undefined ? 'none' : 'set'})\n`);
      channel.ack(msg);
      return;
    }
    channel.ack(msg);
    if (body.type === 'command' && body.name === 'note') {
      process.stdout.write(`note: ${body.content.parameters.text}\n`);
    } else if (body.type === 'command' && body.name === 'quit' && !stopping) {
      stopping = true;
      process.stdout.write('quit\n');
      setImmediate(() => connection.close().then(() => process.exit(0)));
    }
  });
  process.stdout.write(`serving ${queue}\n`);
  return new Promise(() => {}); // until quit
}

async function main(argv) {
  const [action, ...args] = argv;
  if ((action === 'call' || action === 'send') && args.length >= 3) {
    const [exchange, key, name, params] = args;
    return (action === 'call' ? call : send)(exchange, key, name, parameters(params));
  }
  if (action === 'serve' && args.length === 3) return serve(...args);
  process.stderr.write('usage: peer.js call|send EXCHANGE KEY NAME [JSON] | serve EXCHANGE KEY QUEUE\n');
  return 64;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (error) => { process.stderr.write(`peer.js: ${error.stack || error}\n`); process.exitCode = 3; },
);
