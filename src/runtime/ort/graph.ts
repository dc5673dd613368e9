/**
 * Builds an ONNX ModelProto in code (onnx-proto's protobufjs messages): default opset 17 plus the
 * `com.microsoft` domain (MatMulNBits, SimplifiedLayerNormalization, ...). Value names are unique
 * per builder; constants and weights become initializers so ONNX Runtime binds (and prepacks) them
 * once per session.
 */
import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;

export type ElemType = 'float32' | 'int64' | 'uint8' | 'int32';

const DATA_TYPE: Record<ElemType, number> = {
  float32: onnx.TensorProto.DataType.FLOAT,
  int64: onnx.TensorProto.DataType.INT64,
  uint8: onnx.TensorProto.DataType.UINT8,
  int32: onnx.TensorProto.DataType.INT32,
};

/** Marks a number (or list) as a FLOAT attribute even when it is integral (e.g. `alpha: floatAttr(1)`). */
export class FloatAttr {
  constructor(readonly value: number | number[]) {}
}
export function floatAttr(value: number | number[]): FloatAttr {
  return new FloatAttr(value);
}

export type AttrValue = number | number[] | string | boolean | FloatAttr;
export type Attrs = Record<string, AttrValue>;

/** Attribute names that are FLOAT in the operators we use, so integral values are not sent as INT. */
const FLOAT_ATTRS = new Set(['epsilon', 'alpha', 'beta', 'gamma', 'scale', 'value_float', 'value_floats', 'softcap', 'min', 'max']);

function attribute(name: string, v: AttrValue): onnxProto.onnx.IAttributeProto {
  const T = onnx.AttributeProto.AttributeType;
  if (v instanceof FloatAttr) {
    return Array.isArray(v.value) ? { name, type: T.FLOATS, floats: v.value } : { name, type: T.FLOAT, f: v.value };
  }
  if (typeof v === 'string') return { name, type: T.STRING, s: new TextEncoder().encode(v) };
  if (typeof v === 'boolean') return { name, type: T.INT, i: v ? 1 : 0 };
  if (Array.isArray(v)) {
    const asFloat = FLOAT_ATTRS.has(name) || v.some((x) => !Number.isInteger(x));
    return asFloat ? { name, type: T.FLOATS, floats: v } : { name, type: T.INTS, ints: v };
  }
  const asFloat = FLOAT_ATTRS.has(name) || !Number.isInteger(v);
  return asFloat ? { name, type: T.FLOAT, f: v } : { name, type: T.INT, i: v };
}

function valueInfo(name: string, type: ElemType, dims: (number | string)[]): onnxProto.onnx.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: DATA_TYPE[type],
        shape: { dim: dims.map((d) => (typeof d === 'string' ? { dimParam: d } : { dimValue: d })) },
      },
    },
  };
}

function bytesOf(data: Float32Array | Uint8Array | Int32Array | BigInt64Array): Uint8Array {
  // Little-endian hosts only (x86/ARM): ONNX raw_data is little-endian.
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

function elemTypeOf(data: Float32Array | Uint8Array | Int32Array | BigInt64Array): ElemType {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Uint8Array) return 'uint8';
  if (data instanceof Int32Array) return 'int32';
  return 'int64';
}

/** Initializers at least this big are external data (views of the host arrays, not protobuf copies). */
const EXTERNAL_MIN_BYTES = 1 << 16;

/** One in-memory "file" of external initializer data, as ORT's `externalData` session option takes it. */
export interface ExternalData {
  path: string;
  data: Uint8Array;
}

/**
 * The external data of serialized models, keyed by their bytes: a model from toBytes() carries its
 * large weights as views of the host arrays (no protobuf copy of every weight, no 2 GiB limit on
 * them); createSession hands them to ORT. The arrays must stay unchanged until the session exists.
 */
const externalOf = new WeakMap<Uint8Array, ExternalData[]>();

/** The external data a model from GraphBuilder.toBytes() needs (none for small graphs). */
export function externalDataOf(model: Uint8Array): ExternalData[] {
  return externalOf.get(model) ?? [];
}

/** A weight declared as a graph input: what the runner feeds under `name`. */
export interface WeightFeed {
  name: string;
  data: Float32Array | Uint8Array;
  dims: number[];
}

export class GraphBuilder {
  private readonly nodes: onnxProto.onnx.INodeProto[] = [];
  private readonly inputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly outputs: onnxProto.onnx.IValueInfoProto[] = [];
  private readonly initializers: onnxProto.onnx.ITensorProto[] = [];
  /** Names handed out by fresh() or declared (inputs, initializers, renamed outputs). */
  private readonly used = new Set<string>();
  private readonly declared = new Set<string>();
  private counter = 0;
  /** Graph output names, and node values renamed to an output name (value -> output name). */
  private readonly outputNames = new Set<string>();
  private readonly renamed = new Map<string, string>();
  /** Bytes of initializer data so far. */
  initializerBytes = 0;
  /** Bytes of initializer data inside the protobuf (which caps a whole model at 2 GiB). */
  private inlineBytes = 0;
  /** Large initializers, passed to ORT as in-memory external data instead of copied into the protobuf. */
  private readonly external: ExternalData[] = [];

  /**
   * Weights declared through weight() as graph inputs (`weightInputs`): the graph holds no weight
   * data, so one session serves every layer of the same kind, fed each layer's arrays per run.
   */
  readonly weightFeeds: WeightFeed[] = [];

  constructor(
    readonly name: string,
    readonly opts: { weightInputs?: boolean } = {},
  ) {}

  /** A new unique value name starting with `prefix`. */
  fresh(prefix: string): string {
    let n = `${prefix}_${this.counter++}`;
    while (this.used.has(n)) n = `${prefix}_${this.counter++}`;
    this.used.add(n);
    return n;
  }

  private claim(name: string): string {
    if (this.declared.has(name)) throw new Error(`GraphBuilder ${this.name}: value name '${name}' declared twice`);
    this.declared.add(name);
    this.used.add(name);
    return name;
  }

  /** Declare a graph input; symbolic dims are strings ('B', 'T'). */
  input(name: string, type: ElemType, dims: (number | string)[]): string {
    this.inputs.push(valueInfo(this.claim(name), type, dims));
    return name;
  }

  /**
   * Declare `value` a graph output, named `name` when given. A node's output not yet a graph output
   * is renamed in place (every use follows), so ORT writes it straight into the output buffer; a
   * graph input, an initializer or a value already output goes through an Identity (a copy).
   */
  output(value: string, type: ElemType, dims: (number | string)[], name?: string): void {
    let out = this.renamed.get(value) ?? value;
    if (name !== undefined && name !== out) {
      const producer = this.outputNames.has(out) ? undefined : this.nodes.find((n) => n.output!.includes(out));
      this.claim(name);
      if (producer) {
        for (const n of this.nodes) {
          n.input = n.input!.map((x) => (x === out ? name : x));
          n.output = n.output!.map((x) => (x === out ? name : x));
        }
        this.renamed.set(value, name);
      } else {
        this.nodes.push({ opType: 'Identity', input: [out], output: [name], name: this.fresh('Identity') });
      }
      out = name;
    }
    this.outputNames.add(out);
    this.outputs.push(valueInfo(out, type, dims));
  }

  initializer(name: string, data: Float32Array | Uint8Array | Int32Array | BigInt64Array, dims: number[]): string {
    const numel = dims.reduce((a, b) => a * b, 1);
    if (numel !== data.length) throw new Error(`GraphBuilder ${this.name}: initializer '${name}' has ${data.length} values for dims [${dims}]`);
    const dataType = DATA_TYPE[elemTypeOf(data)];
    if (data.byteLength >= EXTERNAL_MIN_BYTES) {
      // Weights stay in their host arrays: ORT reads them from memory at session creation.
      const path = `ext_${this.external.length}.bin`;
      this.external.push({ path, data: bytesOf(data) });
      const externalData = [
        { key: 'location', value: path },
        { key: 'offset', value: '0' },
        { key: 'length', value: String(data.byteLength) },
      ];
      this.initializers.push({ name: this.claim(name), dims, dataType, dataLocation: onnx.TensorProto.DataLocation.EXTERNAL, externalData });
    } else {
      this.initializers.push({ name: this.claim(name), dims, dataType, rawData: bytesOf(data) });
      this.inlineBytes += data.byteLength;
    }
    this.initializerBytes += data.byteLength;
    return name;
  }

  /**
   * A weight: an initializer, or with `weightInputs` a graph input of that name whose data is
   * recorded in weightFeeds (the runner feeds it; ORT reads the host array in place, no copy).
   */
  weight(name: string, data: Float32Array | Uint8Array, dims: number[]): string {
    if (!this.opts.weightInputs) return this.initializer(name, data, dims);
    const numel = dims.reduce((a, b) => a * b, 1);
    if (numel !== data.length) throw new Error(`GraphBuilder ${this.name}: weight '${name}' has ${data.length} values for dims [${dims}]`);
    this.input(name, elemTypeOf(data), dims);
    this.weightFeeds.push({ name, data, dims });
    return name;
  }

  /** A float32 constant (an initializer with a unique name). */
  constF(values: number[] | Float32Array, dims: number[]): string {
    return this.initializer(this.fresh('cf'), values instanceof Float32Array ? values : Float32Array.from(values), dims);
  }

  /** An int64 constant, 1-D by default. */
  constI(values: number[], dims?: number[]): string {
    return this.initializer(this.fresh('ci'), BigInt64Array.from(values.map((v) => BigInt(v))), dims ?? [values.length]);
  }

  /** Add a node; returns its first output's name. */
  node(op: string, inputs: string[], attrs?: Attrs, opts?: { domain?: string; outputs?: number }): string {
    return this.nodeN(op, inputs, opts?.outputs ?? 1, attrs, opts)[0]!;
  }

  /** Add a node with `n` outputs; returns their names. */
  nodeN(op: string, inputs: string[], n: number, attrs?: Attrs, opts?: { domain?: string }): string[] {
    const outs = Array.from({ length: n }, () => this.fresh(op));
    this.nodes.push({
      opType: op,
      domain: opts?.domain ?? '',
      input: inputs.map((x) => this.renamed.get(x) ?? x),
      output: outs,
      name: this.fresh(`n_${op}`),
      attribute: Object.entries(attrs ?? {}).map(([k, v]) => attribute(k, v)),
    });
    return outs;
  }

  /** Serialize as a ModelProto (IR 8, opset 17 + com.microsoft 1). */
  toBytes(): Uint8Array {
    if (this.inlineBytes >= 2 ** 31 - 2 ** 20) {
      throw new Error(`GraphBuilder ${this.name}: ${this.inlineBytes} bytes of weights exceed one ONNX model's 2 GiB protobuf limit`);
    }
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'synaxim',
      opsetImport: [
        { domain: '', version: 17 },
        { domain: 'com.microsoft', version: 1 },
      ],
      graph: {
        name: this.name,
        node: this.nodes,
        input: this.inputs,
        output: this.outputs,
        initializer: this.initializers,
      },
    });
    const bytes = onnx.ModelProto.encode(model).finish();
    if (this.external.length > 0) externalOf.set(bytes, this.external);
    return bytes;
  }
}
